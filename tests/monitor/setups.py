"""Small training setups for the monitor tests: data, a plain loop, and a watched run."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gradwise import monitor
from gradwise.data import Batches, Dataset, DataSplits, load_dataset
from gradwise.preprocess import Standardize

MONITOR_SAMPLES = 256


def sgd_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: object) -> torch.Tensor:
    """One cross-entropy step on ``batch`` = (inputs, targets); returns the loss."""
    inputs, targets = batch  # type: ignore[misc]
    loss = F.cross_entropy(model(inputs), targets)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss


@functools.cache
def standardized(name: str) -> DataSplits:
    """A built-in dataset standardized with training statistics (per channel)."""
    data = load_dataset(name, seed=0)
    per = "feature" if data.train.inputs.dim() == 2 else "channel"
    scaler = Standardize(per=per).fit(data.train.inputs)

    def transform(split: Dataset | None) -> Dataset | None:
        if split is None:
            return None
        return dataclasses.replace(split, inputs=scaler.transform(split.inputs))

    return dataclasses.replace(
        data,
        train=transform(data.train),
        validation=transform(data.validation),
        test=transform(data.test),
    )


def monitor_subset(
    data: DataSplits, size: int = MONITOR_SAMPLES
) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))
    index = order[:size]
    return data.train.inputs[index], data.train.targets[index]


@dataclasses.dataclass
class Run:
    """A training setup: how to build the model and optimizer, the data, the length."""

    make: Callable[[], tuple[nn.Module, torch.optim.Optimizer]]
    data: DataSplits
    steps: int
    batch_size: int = 64
    seed: int = 0


def train(
    run: Run,
    *,
    watched: bool = True,
    corrupt: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
    **options: Any,
) -> tuple[monitor.Watch | None, nn.Module]:
    """Train ``run`` in a plain loop, with a watch (monitoring subset and validation)
    unless ``watched`` is False; ``corrupt(step, inputs)`` may alter a batch."""
    torch.manual_seed(run.seed)
    model, optimizer = run.make()
    data = run.data
    watch = None
    if watched:
        validation = data.validation
        assert validation is not None
        watch = monitor.watch(
            model,
            optimizer,
            monitor_data=monitor_subset(data),
            validation_data=(validation.inputs, validation.targets),
            **options,
        )
    batches = Batches(data.train, run.batch_size, seed=run.seed)
    step, epoch = 0, 0
    model.train()
    while step < run.steps:
        for inputs, targets in batches.epoch(epoch):
            step += 1
            if corrupt is not None:
                inputs = corrupt(step, inputs)
            loss = F.cross_entropy(model(inputs), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if watch is not None:
                watch.step(loss)
            if step >= run.steps:
                break
        epoch += 1
    if watch is not None:
        watch.close()
    return watch, model


def kinds(watch: monitor.Watch | None) -> set[str]:
    assert watch is not None
    return {finding.kind.name for finding in watch.findings()}


def outputs_of(model: nn.Module, inputs: torch.Tensor, *names: str) -> dict[str, torch.Tensor]:
    """The output of each call of the modules ``names`` (``act``, ``act#2``, ...) in an
    eval-mode forward, as the probes run it (the model is left in eval mode)."""
    found: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Callable[[nn.Module, object, torch.Tensor], None]:
        def hook(module: nn.Module, args: object, output: torch.Tensor) -> None:
            calls = sum(key.split("#")[0] == name for key in found)
            found[name if calls == 0 else f"{name}#{calls + 1}"] = output.detach().clone()

        return hook

    modules = dict(model.named_modules())
    handles = [modules[name].register_forward_hook(keep(name)) for name in names]
    with torch.no_grad():
        model.eval()(inputs)
    for handle in handles:
        handle.remove()
    return found
