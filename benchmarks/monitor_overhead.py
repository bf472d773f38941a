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

With ``--through-train`` the same three run as ``gradwise train`` does them, zero-config
(the default 20 epochs unless ``--epochs`` says otherwise), with ``monitor: null``, the
default ``monitor:`` section, and ``monitor.every=1, monitor.cheap_every=1``; the times
are the runs' own ``duration_s`` (the Trainer's loop with its per-epoch validation,
metrics, checkpoints and the live doctor's findings; not the imports, data loading or the
report), in a temporary runs folder. The weights check compares the last checkpoints.

Run: .venv/bin/python benchmarks/monitor_overhead.py [--repeats 20] [--epochs 2]
     [--monitor-samples 256] [--device cuda] [--through-train]  (on a GPU every timer
     read waits for the queued kernels)
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from gradwise import init, monitor, optim
from gradwise.config import load_config
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


def train(
    setup: Setup, options: dict[str, int] | None
) -> tuple[float, float, dict[str, torch.Tensor], int]:
    """One timed run; ``options`` are watch() arguments, None for no watch.

    Returns (seconds in the training loop, seconds creating the watch, final weights and
    batch-norm statistics, findings).
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
    if watch is not None:
        watch.histograms()  # bins the histogram samples still waiting: part of the cost
    end = clock(setup.device)
    findings = 0
    if watch is not None:
        findings = len(watch.findings())
        watch.close()
    return end - created, created - start, model.state_dict(), findings


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


# What --through-train sets on top of the zero-config run, per variant.
TRAIN_OVERRIDES: dict[str, list[str]] = {
    "no watch": ["monitor=null"],
    "default cadence": [],
    "everything every step": ["monitor.every=1", "monitor.cheap_every=1"],
}


def train_command(
    epochs: int, monitor_samples: int, runs: Path
) -> Callable[[str], tuple[float, float, dict[str, torch.Tensor], int]]:
    """One ``gradwise train`` run of a variant: (duration_s, 0, final weights, findings)."""
    from gradwise.train import train as train_from_config
    from gradwise.train._checkpoint import load_checkpoint

    def run(name: str) -> tuple[float, float, dict[str, torch.Tensor], int]:
        overrides = [f"runs_dir={runs}", f"epochs={epochs}", f"monitor.subset={monitor_samples}"]
        if name == "no watch":
            overrides.pop()
        config = load_config(None, overrides + TRAIN_OVERRIDES[name])
        result = train_from_config(config, progress=False)
        assert result.run is not None  # noqa: S101 - train() always makes a run folder
        findings = result.run.findings_path
        count = len(findings.read_text().splitlines()) if findings.is_file() else 0
        weights = load_checkpoint(result.run.last_checkpoint)["model"]
        return result.summary["duration_s"], 0.0, weights, count

    return run


def compare(
    run: Callable[[str], tuple[float, float, dict[str, torch.Tensor], int]], repeats: int
) -> Timings:
    names = list(VARIANTS)
    timings = Timings({name: [] for name in names}, {name: [] for name in names})
    for repeat in range(WARMUP_REPEATS + repeats):
        shift = repeat % len(names)
        weights: dict[str, dict[str, torch.Tensor]] = {}
        for name in names[shift:] + names[:shift]:
            loop, creation, weights[name], timings.findings[name] = run(name)
            if repeat >= WARMUP_REPEATS:
                timings.loop[name].append(loop)
                timings.creation[name].append(creation)
        reference = weights["no watch"]
        for state in weights.values():
            timings.identical &= all(torch.equal(reference[key], state[key]) for key in reference)
    return timings


def report(timings: Timings, through_train: bool) -> None:
    base = timings.loop["no watch"]
    title = "gradwise train" if through_train else "training loop"
    print(
        f"{title:<24} {'median ms':>9} {'min ms':>8} {'median':>8} {'min':>7}"
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
    if through_train:
        return
    creation = statistics.median(timings.creation["default cadence"]) * 1e3
    print(
        f"creating the watch (one probe of the monitoring subset at step 0): median "
        f"{creation:.1f} ms, once per run ({creation / (min(base) * 1e3):.1%} of this run's "
        f"fastest plain loop)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--epochs", type=int, help="2 (the loop) or 20 (--through-train)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--monitor-samples", type=int, default=MONITOR_SAMPLES)
    parser.add_argument(
        "--through-train", action="store_true", help="time gradwise train's runs instead"
    )
    args = parser.parse_args()
    epochs = args.epochs or (20 if args.through_train else 2)
    torch.set_num_threads(1)
    # cuDNN's fastest convolution backward kernels add in a varying order: without this,
    # two identical runs end with different weights and the check below means nothing.
    torch.backends.cudnn.deterministic = True
    device = torch.device(args.device)
    setup = make_setup(args.batch_size, epochs, device, args.monitor_samples)
    print(f"torch {torch.__version__}, 1 thread, device {args.device}")
    print(
        f"cnn1d (batch norm, He init) on standardized MNIST-1D, AdamW(3e-3, wd 0.05), batch "
        f"{args.batch_size}, {epochs} epochs = {setup.steps} steps per run; monitoring "
        f"subset {args.monitor_samples} samples"
    )
    if args.through_train:
        print("through gradwise train (zero-config, cosine schedule; the runs' duration_s)")
    print(f"{args.repeats} repeats after {WARMUP_REPEATS} warmup; the runs of a repeat rotate")
    print()
    with tempfile.TemporaryDirectory() as runs:
        if args.through_train:
            timings = compare(train_command(epochs, args.monitor_samples, Path(runs)), args.repeats)
        else:
            timings = compare(lambda name: train(setup, VARIANTS[name]), args.repeats)
    report(timings, args.through_train)
    print(f"same final weights and batch-norm statistics in all three: {timings.identical}")


if __name__ == "__main__":
    main()
