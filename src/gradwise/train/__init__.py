"""Training: the :class:`Trainer`, its callbacks, checkpoints, and runs built from a config.

``Trainer(model, optimizer, data, ...).fit()`` is the library form of ``gradwise train``;
:func:`train` and :func:`resume` are the configured forms the CLI calls.
"""

from gradwise.train._callbacks import Callback, TrainState
from gradwise.train._checkpoint import load_checkpoint, save_checkpoint
from gradwise.train._from_config import PreparedRun, make_trainer, prepare_run, resume, train
from gradwise.train._trainer import FitResult, Trainer, TrainingDiverged
from gradwise.train._warm_start import SkippedEntry, WarmStartReport, freeze, warm_start

__all__ = [
    "Callback",
    "FitResult",
    "PreparedRun",
    "SkippedEntry",
    "TrainState",
    "Trainer",
    "TrainingDiverged",
    "WarmStartReport",
    "freeze",
    "load_checkpoint",
    "make_trainer",
    "prepare_run",
    "resume",
    "save_checkpoint",
    "train",
    "warm_start",
]
