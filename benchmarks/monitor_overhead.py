"""What gradwise.monitor costs: training time with a watch over training time without.

The default ``gradwise train`` model (``cnn1d`` with batch norm, He-initialized, on
MNIST-1D standardized per channel with training statistics, ``gradwise.optim.AdamW(lr=3e-3,
weight_decay=0.05)``, batch size 128) trains for ``--epochs`` epochs in a plain PyTorch loop
(forward, ``F.cross_entropy``, ``zero_grad(set_to_none=True)``, backward, ``step()``) from
the same initial weights and in the same data order, three ways:

- **no watch**: the loop alone;
- **default cadence**: ``watch(model, optimizer, monitor_data=<256 training samples>)``
  with its defaults (gradient norms and update ratios every 10 steps; activation
  statistics, dead/saturated units, histograms and the monitoring loss every 50 steps),
  ``watch.step(loss)`` after every optimizer step;
- **everything every step**: the same with ``every=1, cheap_every=1``.

Each repeat runs the three in an order that rotates from repeat to repeat, so that drift
on a shared machine reaches all of them alike; the first two repeats are warmup. The
ratios are of the minimums (the headline on a shared machine), of the medians, and the
median of the per-repeat ratios ("paired"). The script also checks that the three end
with bit-identical weights and batch-norm statistics: the probes leave the model as they
found it. One thread.

The watch is created outside the timed training loop (it probes the monitoring subset once,
at step 0); its one-time cost is printed separately.

Run: .venv/bin/python benchmarks/monitor_overhead.py [--repeats 20] [--epochs 2]
     [--monitor-samples 256] [--device cuda]  (on a GPU every timer read waits for the
     queued kernels)
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from gradwise import init, monitor, optim
from gradwise.data import Batches, Dataset, load_dataset
from gradwise.models import cnn1d
from gradwise.preprocess import Standardize

WARMUP_REPEATS = 2
MONITOR_SAMPLES = 256
TARGETS = {"default cadence": 1.03, "everything every step": 1.5}


@dataclasses.dataclass(frozen=True)
class Setup:
    train: Dataset
    monitor_data: tuple[torch.Tensor, torch.Tensor]
    initial: dict[str, torch.Tensor]
    batch_size: int
    epochs: int
    device: torch.device

    @property
    def steps(self) -> int:
        return self.epochs * -(-len(self.train) // self.batch_size)


def make_setup(
    batch_size: int, epochs: int, device: torch.device, monitor_samples: int = MONITOR_SAMPLES
) -> Setup:
    data = load_dataset("mnist1d", seed=0)
    scaler = Standardize(per="channel").fit(data.train.inputs)
    train = dataclasses.replace(data.train, inputs=scaler.transform(data.train.inputs)).to(device)
    model = cnn1d((1, 40), 10)
    init.initialize(model, "he_normal", generator=0)
    subset = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    index = subset[:monitor_samples].to(device)
    monitor_data = (train.inputs[index], train.targets[index])
    initial = {k: v.to(device) for k, v in model.state_dict().items()}
    return Setup(train, monitor_data, initial, batch_size, epochs, device)


def clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # queued kernels belong to the run being timed
    return time.perf_counter()


def train(setup: Setup, options: dict[str, int] | None) -> tuple[float, float, nn.Module, int]:
    """One timed run; ``options`` are watch() arguments, None for no watch.

    Returns (seconds in the training loop, seconds creating the watch, model, findings).
    """
    model = cnn1d((1, 40), 10).to(setup.device)
    model.load_state_dict(setup.initial)
    optimizer = optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    batches = Batches(setup.train, setup.batch_size, shuffle=True, seed=0)
    start = clock(setup.device)
    watch = None
    if options is not None:
        watch = monitor.watch(model, optimizer, monitor_data=setup.monitor_data, **options)
    created = clock(setup.device)
    model.train()
    for epoch in range(setup.epochs):
        for inputs, targets in batches.epoch(epoch):
            loss = F.cross_entropy(model(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            if watch is not None:
                watch.step(loss)
    end = clock(setup.device)
    findings = 0
    if watch is not None:
        findings = len(watch.findings())
        watch.close()
    return end - created, created - start, model, findings


VARIANTS: dict[str, dict[str, int] | None] = {
    "no watch": None,
    "default cadence": {},
    "everything every step": {"every": 1, "cheap_every": 1},
}


@dataclasses.dataclass
class Timings:
    loop: dict[str, list[float]]
    creation: dict[str, list[float]]
    identical: bool = True
    findings: dict[str, int] = dataclasses.field(default_factory=dict)


def compare(setup: Setup, repeats: int) -> Timings:
    names = list(VARIANTS)
    timings = Timings({name: [] for name in names}, {name: [] for name in names})
    for repeat in range(WARMUP_REPEATS + repeats):
        shift = repeat % len(names)
        models: dict[str, nn.Module] = {}
        for name in names[shift:] + names[:shift]:
            loop, creation, models[name], timings.findings[name] = train(setup, VARIANTS[name])
            if repeat >= WARMUP_REPEATS:
                timings.loop[name].append(loop)
                timings.creation[name].append(creation)
        reference = models["no watch"].state_dict()
        for model in models.values():
            state = model.state_dict()
            timings.identical &= all(torch.equal(reference[key], state[key]) for key in reference)
    return timings


def report(timings: Timings) -> None:
    base = timings.loop["no watch"]
    print(
        f"{'training loop':<24} {'median ms':>9} {'min ms':>8} {'median':>8} {'min':>7}"
        f" {'paired':>7} {'target':>7} {'findings':>8}"
    )
    print("-" * 80)
    for name, values in timings.loop.items():
        paired = statistics.median(v / b for v, b in zip(values, base, strict=True))
        target = f"{TARGETS[name]:.2f}x" if name in TARGETS else ""
        print(
            f"{name:<24} {statistics.median(values) * 1e3:9.1f} {min(values) * 1e3:8.1f}"
            f" {statistics.median(values) / statistics.median(base):7.3f}x"
            f" {min(values) / min(base):6.3f}x {paired:6.3f}x {target:>7}"
            f" {timings.findings[name]:8d}"
        )
    print()
    creation = statistics.median(timings.creation["default cadence"]) * 1e3
    print(
        f"creating the watch (one probe of the monitoring subset at step 0): median "
        f"{creation:.1f} ms, once per run ({creation / (min(base) * 1e3):.1%} of this run's "
        f"fastest plain loop)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--monitor-samples", type=int, default=MONITOR_SAMPLES)
    args = parser.parse_args()
    torch.set_num_threads(1)
    # cuDNN's fastest convolution backward kernels add in a varying order: without this,
    # two identical runs end with different weights and the check below means nothing.
    torch.backends.cudnn.deterministic = True
    device = torch.device(args.device)
    setup = make_setup(args.batch_size, args.epochs, device, args.monitor_samples)
    print(f"torch {torch.__version__}, 1 thread, device {args.device}")
    print(
        f"cnn1d (batch norm, He init) on standardized MNIST-1D, AdamW(3e-3, wd 0.05), batch "
        f"{args.batch_size}, {args.epochs} epochs = {setup.steps} steps per run; monitoring "
        f"subset {args.monitor_samples} samples"
    )
    print(f"{args.repeats} repeats after {WARMUP_REPEATS} warmup; the runs of a repeat rotate")
    print()
    timings = compare(setup, args.repeats)
    report(timings)
    print(f"same final weights and batch-norm statistics in all three: {timings.identical}")


if __name__ == "__main__":
    main()
