"""The Trainer's overhead over a minimal hand-written PyTorch loop doing the same work.

Both sides train a model on MNIST-1D (standardized per channel with training statistics)
for one epoch from the same initial weights, with the same optimizer
(``gradwise.optim.Adam(lr=1e-3)``, fresh each run), batch size and data order (epoch 0 of
``gradwise.data.Batches(train, batch_size, seed=0)``, which is what the Trainer draws). The
Trainer runs with no monitors: ``run=None``, ``progress=False``, the default
``log_every=10``, no callbacks. Three comparisons:

- **cnn1d, train only**: the default ``cnn1d``; the Trainer gets DataSplits without
  validation and test splits, so it evaluates nothing, and neither does the loop.
- **cnn1d, train + validation**: both evaluate the 400 validation samples after the epoch
  (the loop in eval mode under ``torch.no_grad``, in batches of 1024 like the Trainer).
- **linear, train only**: logistic regression (``mlp(depth=0)``), so little compute that
  the Trainer's own cost per step shows; "extra per step" is (min trainer - min loop) /
  steps.

Each repeat times one ``Trainer(...).fit()`` (construction excluded) and one loop epoch
for every comparison, in an order that rotates from repeat to repeat so drift reaches all
runs alike; the first two repeats are warmup. Three ratios: of the medians, of the
minimums (the headline on a shared machine: the least disturbed run of each), and the
median of the per-repeat ratios ("paired"). The script also checks that both sides end
with bit-identical weights, which shows they did the same work. One thread.

Run: .venv/bin/python benchmarks/trainer_overhead.py [--repeats 30] [--batch-size 128]
     [--device cuda]  (on a GPU every timer read waits for the queued kernels)
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gradwise import Trainer, optim
from gradwise.data import Batches, Dataset, DataSplits, load_dataset
from gradwise.models import cnn1d, mlp
from gradwise.preprocess import Standardize

WARMUP_REPEATS = 2
TARGET = 1.05
EVALUATION_BATCH_SIZE = 1024


@dataclasses.dataclass(frozen=True)
class Setup:
    data: DataSplits
    make_model: Callable[[], nn.Module]
    initial: dict[str, torch.Tensor]  # the weights both sides start from
    batch_size: int
    device: torch.device

    @classmethod
    def create(
        cls, data: DataSplits, make_model: Callable[[], nn.Module], batch_size: int
    ) -> Setup:
        device = data.train.inputs.device
        initial = {k: v.to(device) for k, v in make_model().state_dict().items()}
        return cls(data, make_model, initial, batch_size, device)

    @property
    def steps(self) -> int:
        return -(-len(self.data.train) // self.batch_size)


def prepared_data(device: torch.device) -> DataSplits:
    """MNIST-1D standardized per channel with training statistics, on ``device``."""
    data = load_dataset("mnist1d", seed=0)
    scaler = Standardize(per="channel").fit(data.train.inputs)

    def standardized(dataset: Dataset) -> Dataset:
        return dataclasses.replace(dataset, inputs=scaler.transform(dataset.inputs)).to(device)

    if data.validation is None or data.test is None:
        raise RuntimeError("load_dataset('mnist1d') should give validation and test splits")
    return dataclasses.replace(
        data,
        train=standardized(data.train),
        validation=standardized(data.validation),
        test=standardized(data.test),
    )


def fresh_model(setup: Setup) -> nn.Module:
    model = setup.make_model().to(setup.device)
    model.load_state_dict(setup.initial)
    return model


def clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # queued kernels belong to the run being timed
    return time.perf_counter()


def run_trainer(setup: Setup) -> tuple[float, nn.Module]:
    model = fresh_model(setup)
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    trainer = Trainer(
        model, optimizer, setup.data, batch_size=setup.batch_size, epochs=1, seed=0, progress=False
    )
    start = clock(setup.device)
    trainer.fit()
    return clock(setup.device) - start, model


def run_loop(setup: Setup) -> tuple[float, nn.Module]:
    model = fresh_model(setup)
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    data = setup.data
    batches = Batches(data.train, setup.batch_size, shuffle=True, seed=0)  # the Trainer's order
    start = clock(setup.device)
    model.train()
    for inputs, targets in batches.epoch(0):
        loss = F.cross_entropy(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    if data.validation is not None:
        evaluate(model, data.validation.inputs, data.validation.targets)
    return clock(setup.device) - start, model


@torch.no_grad()
def evaluate(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
    model.eval()
    loss_sum, correct = 0.0, 0
    for begin in range(0, len(targets), EVALUATION_BATCH_SIZE):
        outputs = model(inputs[begin : begin + EVALUATION_BATCH_SIZE])
        batch_targets = targets[begin : begin + EVALUATION_BATCH_SIZE]
        loss_sum += float(F.cross_entropy(outputs, batch_targets)) * len(batch_targets)
        correct += int((outputs.argmax(dim=1) == batch_targets).sum())
    model.train()
    return loss_sum / len(targets), correct / len(targets)


Runner = Callable[[Setup], tuple[float, nn.Module]]
RUNNERS: dict[str, Runner] = {"trainer": run_trainer, "loop": run_loop}


@dataclasses.dataclass
class Timings:
    trainer: list[float] = dataclasses.field(default_factory=list)
    loop: list[float] = dataclasses.field(default_factory=list)
    identical: bool = True  # both sides ended every repeat with the same weights


def compare(setups: dict[str, Setup], repeats: int) -> dict[str, Timings]:
    """Per-epoch times of the Trainer and of the loop for each setup, run interleaved.

    Every repeat runs all (setup, side) pairs once, starting one later in the rotation
    each time, so machine drift reaches every pair alike.
    """
    pairs = [(label, side) for label in setups for side in RUNNERS]
    timings = {label: Timings() for label in setups}
    for repeat in range(WARMUP_REPEATS + repeats):
        shift = repeat % len(pairs)
        models: dict[tuple[str, str], nn.Module] = {}
        for label, side in pairs[shift:] + pairs[:shift]:
            elapsed, models[label, side] = RUNNERS[side](setups[label])
            if repeat >= WARMUP_REPEATS:
                getattr(timings[label], side).append(elapsed)
        for label, timing in timings.items():
            timing.identical &= same_state(models[label, "trainer"], models[label, "loop"])
    return timings


def same_state(first: nn.Module, second: nn.Module) -> bool:
    a, b = first.state_dict(), second.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def report(label: str, timing: Timings, steps: int) -> None:
    trainer, loop = timing.trainer, timing.loop
    median_ratio = statistics.median(trainer) / statistics.median(loop)
    min_ratio = min(trainer) / min(loop)
    # The runs of one repeat are close in time, so their ratio cancels slow drift.
    paired_ratio = statistics.median(t / lp for t, lp in zip(trainer, loop, strict=True))
    extra_per_step = (min(trainer) - min(loop)) / steps
    print(
        f"{label:<26} {statistics.median(trainer) * 1e3:7.1f} {min(trainer) * 1e3:7.1f}"
        f" {statistics.median(loop) * 1e3:7.1f} {min(loop) * 1e3:7.1f}"
        f" {median_ratio:7.3f}x {min_ratio:6.3f}x {paired_ratio:6.3f}x"
        f" {extra_per_step * 1e6:7.0f} us  {'yes' if timing.identical else 'NO'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    # cuDNN's fastest convolution backward kernels add in a varying order: without this,
    # two identical runs end with different weights and the check below means nothing.
    torch.backends.cudnn.deterministic = True

    torch.manual_seed(0)  # the shared initial weights
    data = prepared_data(torch.device(args.device))
    train_only = dataclasses.replace(data, validation=None, test=None)
    cnn = functools.partial(cnn1d, (1, 40), 10)
    linear = functools.partial(mlp, (1, 40), 10, depth=0)  # logistic regression
    setups = {
        "cnn1d, train only": Setup.create(train_only, cnn, args.batch_size),
        "cnn1d, train + validation": Setup.create(
            dataclasses.replace(data, test=None), cnn, args.batch_size
        ),
        "linear, train only": Setup.create(train_only, linear, args.batch_size),
    }
    steps = setups["cnn1d, train only"].steps
    print(f"torch {torch.__version__}, 1 thread, device {args.device}; {data.description}")
    print(
        f"one epoch = {steps} steps of batch {args.batch_size}, gradwise.optim.Adam(lr=1e-3); "
        "Trainer(run=None, progress=False, log_every=10)"
    )
    print(f"{args.repeats} repeats after {WARMUP_REPEATS} warmup; the runs of a repeat rotate")
    print()
    print(
        f"{'per epoch (ms)':<26} {'trainer':^15} {'loop':^15} {'trainer / loop':^24}"
        f" {'extra per':>10}  same"
    )
    print(
        f"{'':<26} {'median':>7} {'min':>7} {'median':>7} {'min':>7}"
        f" {'median':>8} {'min':>7} {'paired':>7} {'step':>10}  weights"
    )
    print("-" * 110)
    for label, timing in compare(setups, args.repeats).items():
        report(label, timing, steps)
    print()
    print(
        f"target: trainer / loop <= {TARGET}x on the cnn1d rows (min over repeats); the linear "
        "row shows the Trainer's own cost per step with almost no compute to hide it."
    )


if __name__ == "__main__":
    main()
