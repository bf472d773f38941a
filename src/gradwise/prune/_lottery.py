"""Iterative magnitude pruning with rewinding: the lottery ticket procedure."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, final

from torch import Tensor, nn

from gradwise._validation import (
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    Boolean,
    Either,
    Interval,
    OneOf,
    Satisfies,
    check,
)
from gradwise.prune._callbacks import Pruning, WeightSnapshot
from gradwise.prune._masks import Masks, magnitude_masks, prunable_parameters
from gradwise.prune._ticket import Ticket
from gradwise.train._callbacks import Callback

#: A pruning rate: the fraction of the remaining weights pruned per round.
RATE = Interval(low=0.0, high=1.0, low_closed=False, high_closed=False)
_OPTIONAL_RATE = Either((RATE, Satisfies(lambda v: v is None, "None")))

BuildModel = Callable[[int], nn.Module]
TrainModel = Callable[[nn.Module, Sequence[Callback]], Mapping[str, Any]]


def prune_round(
    model: nn.Module,
    rate: float,
    *,
    masks: Mapping[str, Tensor] | None = None,
    scope: str = "global",
    output_rate: float | None = None,
) -> Masks:
    """One round of IMP's pruning: ``rate`` of the remaining hidden weights, by magnitude.

    The Linear and Conv weights except the output layer's are pruned by
    :func:`magnitude_masks` (``scope`` "global" or "layer"); the output layer's weights,
    when ``output_rate`` is given, are pruned at that rate on their own (Frankle & Carbin
    prune LeNet's output layer at half the rate of the others).

    Args:
        model: the trained model.
        rate: the fraction of remaining weights to prune, in (0, 1).
        masks: the masks of the previous round, or None (dense).
        scope: "global" or "layer".
        output_rate: the output layer's rate in (0, 1), or None to leave it dense. A
            model whose one Linear or Conv layer is the output layer needs it.

    Example:
        >>> import torch
        >>> from gradwise.prune import prune_round
        >>> model = torch.nn.Sequential(torch.nn.Linear(10, 10), torch.nn.Linear(10, 4))
        >>> masks = prune_round(model, 0.5, output_rate=0.25)
        >>> [int(masks[name].sum()) for name in masks]
        [50, 30]
    """
    check("rate", "prune_round", rate, RATE)
    check("scope", "prune_round", scope, OneOf(("global", "layer")))
    check("output_rate", "prune_round", output_rate, _OPTIONAL_RATE)
    hidden = prunable_parameters(model)
    if not hidden:  # the output layer is all there is
        if output_rate is None:
            raise ValueError(
                "The 'model' parameter of prune_round must have a Linear or convolution layer "
                "before its output layer (the last one), which is left dense unless "
                "'output_rate' is given. Got a model with none; pass output_rate=... to prune "
                "its output layer."
            )
        updated = Masks(masks if masks is not None else {})
    else:
        updated = magnitude_masks(model, rate, scope=scope, masks=masks)
    if output_rate is not None:
        everything = prunable_parameters(model, include_output=True)
        output = [name for name in everything if name not in hidden]
        updated = magnitude_masks(model, output_rate, scope="layer", masks=updated, names=output)
    return updated


@final
@dataclass(frozen=True)
class RoundResult:
    """One training run of :func:`iterative_magnitude_pruning`.

    Attributes:
        round: 0 for the dense run, then 1, 2, ...
        kind: "dense", "ticket" (rewound survivors) or "control" (random reinit).
        fraction_remaining: the fraction of the prunable weights kept (1.0 when dense).
        metrics: what the ``train`` function returned.
        masks: the masks trained with (None when dense).

    Example:
        >>> from gradwise.prune import RoundResult
        >>> RoundResult(1, "ticket", 0.8, {"test_accuracy": 0.97})
        RoundResult(round=1, kind='ticket', fraction_remaining=0.8, metrics={'test_accuracy': 0.97})
    """

    round: int
    kind: str
    fraction_remaining: float
    metrics: Mapping[str, Any]
    masks: Masks | None = field(default=None, repr=False)


def iterative_magnitude_pruning(
    build: BuildModel,
    train: TrainModel,
    *,
    rounds: int,
    rate: float,
    rewind_step: int = 0,
    scope: str = "global",
    output_rate: float | None = None,
    control: bool = True,
    seed: int = 0,
) -> list[RoundResult]:
    r"""Find lottery tickets: train, prune, rewind the survivors, retrain, ``rounds`` times.

    Round 0 trains the dense model ``build(seed)`` and keeps its weights
    :math:`\theta_k` after ``rewind_step`` = k optimizer steps (:math:`\theta_0`, the
    initialization, by default). Each round r = 1..N then prunes ``rate`` of the remaining
    weights by magnitude from the previous round's trained ticket (:func:`prune_round`),
    so :math:`(1 - p)^r` of them remain, and trains

    - the winning ticket: ``build(seed)`` with its parameters and buffers set to
      :math:`\theta_k`, under the masks;
    - unless ``control=False``, the random-reinitialization control: the same masks on a
      fresh model ``build(seed + 1000 * r)``.

    What is rewound: the model's weights (and buffers) only. Every run gets a fresh
    optimizer and schedule from ``train``, which trains for its full length; Frankle et
    al. (2020) instead resume the schedule at step k.

    Args:
        build: ``seed -> model``, a freshly initialized model for the seed.
        train: ``(model, callbacks) -> metrics``: trains the model in place with a new
            optimizer in a :class:`gradwise.Trainer` given the callbacks (they keep the
            masks applied and take the rewind snapshot), and returns its metrics.
        rounds: pruning rounds, an int >= 1.
        rate: the fraction of remaining weights pruned per round, in (0, 1).
        rewind_step: k, an int >= 0 smaller than the dense run's steps.
        scope: "global" or "layer" ranking of magnitudes.
        output_rate: the output layer's per-round rate, or None to leave it dense.
        control: also train the random-reinitialization controls.
        seed: the seed of the dense run and of every winning ticket.

    Returns:
        One :class:`RoundResult` per run, in order (dense; then ticket and control per round).

    References:
        Frankle & Carbin, "The Lottery Ticket Hypothesis: Finding Sparse, Trainable Neural
        Networks", ICLR 2019; Frankle, Dziugaite, Roy & Carbin, "Linear Mode Connectivity
        and the Lottery Ticket Hypothesis", ICML 2020 (rewinding to step k).

    Example:
        >>> import torch
        >>> from gradwise import Trainer, optim
        >>> from gradwise.data import load_dataset
        >>> from gradwise.prune import iterative_magnitude_pruning
        >>> data = load_dataset("spirals", seed=0)
        >>> def build(seed):
        ...     torch.manual_seed(seed)
        ...     return torch.nn.Sequential(
        ...         torch.nn.Linear(2, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))
        >>> def train(model, callbacks):
        ...     optimizer = optim.Adam(model.parameters(), lr=0.01)
        ...     result = Trainer(model, optimizer, data, epochs=2, callbacks=callbacks,
        ...                      progress=False).fit()
        ...     return result.test
        >>> results = iterative_magnitude_pruning(build, train, rounds=2, rate=0.5)
        >>> [(r.kind, r.fraction_remaining) for r in results]  # doctest: +NORMALIZE_WHITESPACE
        [('dense', 1.0), ('ticket', 0.5), ('control', 0.5),
         ('ticket', 0.25), ('control', 0.25)]
    """
    owner = "iterative_magnitude_pruning"
    check("rounds", owner, rounds, POSITIVE_INT)
    check("rate", owner, rate, RATE)
    check("rewind_step", owner, rewind_step, NON_NEGATIVE_INT)
    check("scope", owner, scope, OneOf(("global", "layer")))
    check("output_rate", owner, output_rate, _OPTIONAL_RATE)
    check("control", owner, control, Boolean())
    check("seed", owner, seed, NON_NEGATIVE_INT)
    model = build(seed)
    snapshot = WeightSnapshot(rewind_step)
    results = [RoundResult(0, "dense", 1.0, dict(train(model, [snapshot])))]
    if snapshot.weights is None or snapshot.final_step is None:
        raise ValueError(
            f"The 'rewind_step' parameter of {owner} must be smaller than the dense run's "
            f"number of steps. Got {rewind_step} instead, a step the run never reached."
        )
    if rewind_step >= snapshot.final_step:
        raise ValueError(
            f"The 'rewind_step' parameter of {owner} must be smaller than the dense run's "
            f"number of steps ({snapshot.final_step}). Got {rewind_step} instead: the "
            "weights at the end of the run rewind nothing. Pass a smaller rewind_step, or "
            "train the dense run for more steps."
        )
    masks: Masks | None = None
    for index in range(1, rounds + 1):
        masks = prune_round(model, rate, masks=masks, scope=scope, output_rate=output_rate)
        remaining = masks.fraction_remaining()
        model = build(seed)
        Ticket(masks, snapshot.weights).apply_(model)
        metrics = train(model, [Pruning(masks)])
        results.append(RoundResult(index, "ticket", remaining, dict(metrics), masks))
        if control:
            reinitialized = build(seed + 1000 * index)
            Ticket(masks).apply_(reinitialized)
            metrics = train(reinitialized, [Pruning(masks)])
            results.append(RoundResult(index, "control", remaining, dict(metrics), masks))
    return results
