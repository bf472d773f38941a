"""Hyperparameter search on Optuna: grid, random, coarse-to-fine and TPE, parallel and crash-safe.

The space is the ``search`` section of a run config; each trial is a normal run of
``gradwise train`` in the study folder. See docs/search.md.
"""

from gradwise.search._driver import (
    SearchResult,
    finish,
    load_trials,
    open_study_folder,
    search,
)
from gradwise.search._space import (
    KINDS,
    PRUNERS,
    Parameter,
    SearchSpec,
    Stage,
    parse_search,
)
from gradwise.search._stages import StageRanges, stage_ranges
from gradwise.search._strategies import STRATEGIES, CoarseToFineSampler, grid_points
from gradwise.search._worker import run_worker

__all__ = [
    "KINDS",
    "PRUNERS",
    "STRATEGIES",
    "CoarseToFineSampler",
    "Parameter",
    "SearchResult",
    "SearchSpec",
    "Stage",
    "StageRanges",
    "finish",
    "grid_points",
    "load_trials",
    "open_study_folder",
    "parse_search",
    "run_worker",
    "search",
    "stage_ranges",
]
