"""Logistic regression, an MLP and a CNN on MNIST-1D, beside the dataset's published accuracies."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gradwise._validation import NON_NEGATIVE, POSITIVE, POSITIVE_INT, Interval, Satisfies, check

MNIST1D_PUBLISHED: dict[str, float] = {"logistic regression": 0.32, "MLP": 0.68, "CNN": 0.94}
"""Test accuracies published with MNIST-1D (Greydanus 2020)."""

MNIST1D_MODELS: tuple[str, ...] = tuple(MNIST1D_PUBLISHED)
"""The baselines :func:`mnist1d_baselines` trains, in order of capacity."""


@dataclass(frozen=True)
class Mnist1dResult:
    """One baseline: its test accuracy beside the published one, and its budget."""

    model: str
    test_accuracy: float
    published: float
    epochs: int
    seconds: float


@dataclass(frozen=True)
class Mnist1dResults:
    """The baselines of :func:`mnist1d_baselines`, with the table they render to."""

    results: tuple[Mnist1dResult, ...]
    seed: int

    def accuracy(self, model: str) -> float:
        """The test accuracy of ``model``."""
        for result in self.results:
            if result.model == model:
                return result.test_accuracy
        raise KeyError(f"no baseline named {model!r}")

    def to_table(self) -> Any:
        """A :class:`gradwise.report.Table`: one row per model, ours beside the paper's."""
        from gradwise.report import Table

        rows: list[list[Any]] = [
            [r.model, r.epochs, r.test_accuracy, r.published, round(r.seconds, 1)]
            for r in self.results
        ]
        title = f"MNIST-1D test accuracy, seed {self.seed} (published: Greydanus 2020)"
        return Table(title, ["model", "epochs", "test accuracy", "published", "seconds"], rows)


def _build(name: str, width: int) -> nn.Module:
    from gradwise.models import cnn1d, mlp

    if name == "logistic regression":
        return mlp((1, 40), 10, depth=0)
    if name == "MLP":
        return mlp((1, 40), 10, depth=2, width=width)
    return cnn1d((1, 40), 10)


def _train(name: str, data: Any, epochs: int, settings: dict[str, Any]) -> float:
    from gradwise import init, optim
    from gradwise.schedules import ScheduleLR, cosine_decay, linear_warmup
    from gradwise.train import Trainer
    from gradwise.train._trainer import training_batches

    torch.manual_seed(settings["seed"])
    model = _build(name, 128)
    init.initialize(model, "he_normal", generator=settings["seed"])
    optimizer = optim.AdamW(
        model.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"]
    )
    steps = epochs * len(training_batches(data.train, settings["batch_size"]))  # the Trainer's
    warmup = max(1, round(0.05 * steps))
    schedule = linear_warmup(cosine_decay(settings["lr"], num_steps=steps - warmup),
                             num_steps=warmup)  # fmt: skip
    trainer = Trainer(model, optimizer, data, batch_size=settings["batch_size"], epochs=epochs,
                      scheduler=ScheduleLR(optimizer, schedule), seed=settings["seed"],
                      progress=False)  # fmt: skip
    return float(trainer.fit().test["test_accuracy"])


def mnist1d_baselines(
    models: Sequence[str] = MNIST1D_MODELS,
    *,
    epochs: int = 20,
    lr: float = 3e-3,
    weight_decay: float = 0.05,
    batch_size: int = 128,
    seed: int = 0,
) -> Mnist1dResults:
    """Train MNIST-1D's baselines with ``gradwise train``'s recipe; their test accuracies.

    The data is :func:`gradwise.data.load_dataset` ``("mnist1d", seed=seed)`` (generated
    locally; 4,000 training signals less a 10% validation split, 1,000 test signals,
    already standardized by the generator). Logistic regression is ``mlp(depth=0)``, the
    MLP ``mlp(depth=2, width=128)`` and the CNN ``cnn1d`` (3 conv blocks of 32 channels,
    batch norm). Every model is He-initialized and trained by
    :class:`gradwise.train.Trainer` with AdamW (``lr``, ``weight_decay``), a linear warmup
    over 5% of the steps then cosine decay, for ``epochs`` epochs: the defaults of
    ``gradwise train``.

    Example:
        >>> from gradwise.bench import mnist1d_baselines
        >>> results = mnist1d_baselines(["logistic regression"], epochs=1)
        >>> 0.0 < results.accuracy("logistic regression") < 1.0
        True

    Reference:
        Greydanus, "Scaling down Deep Learning", arXiv:2011.14439, 2020.
    """
    owner = "mnist1d_baselines"
    check("models", owner, models, Satisfies(
        lambda v: isinstance(v, Sequence) and not isinstance(v, str) and len(v) > 0
        and all(m in MNIST1D_PUBLISHED for m in v),
        "a non-empty sequence of names from " + ", ".join(map(repr, MNIST1D_MODELS))))  # fmt: skip
    check("epochs", owner, epochs, POSITIVE_INT)
    check("lr", owner, lr, POSITIVE)
    check("weight_decay", owner, weight_decay, NON_NEGATIVE)
    check("batch_size", owner, batch_size, POSITIVE_INT)
    check("seed", owner, seed, Interval(low=0, high=2**32 - 1, kind="int"))
    from gradwise.data import load_dataset

    data = load_dataset("mnist1d", seed=seed)
    settings = {"lr": lr, "weight_decay": weight_decay, "batch_size": batch_size, "seed": seed}
    results = []
    for name in models:
        started = time.perf_counter()
        accuracy = _train(name, data, epochs, settings)
        results.append(Mnist1dResult(name, accuracy, MNIST1D_PUBLISHED[name], epochs,
                                     time.perf_counter() - started))  # fmt: skip
    return Mnist1dResults(tuple(results), seed)
