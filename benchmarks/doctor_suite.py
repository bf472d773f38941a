"""The doctor suite: planted faults and healthy setups, each a small real training run.

For each setup, ``gradwise.doctor.diagnose`` runs its gradient check, sanity checks and a
short monitored probe run (``probe_epochs`` per setup), and the suite reports:

- per setup: the findings; for a planted fault whether one of them names it correctly
  (one of the fault's accepted kinds); for a healthy setup whether anything was raised
  (a false alarm: any finding of severity "warning" or "error");
- totals: the fraction of faults named correctly, the number of healthy setups that alarm;
- with ``--fix``: the doctor applies the fixes it is confident in and runs the probe
  again; a fault counts as repaired when the fixed probe's final validation accuracy is
  within 2 points of its healthy baseline (the same setup without the fault, same probe
  length). Some faults have no automatic fix by design (a wrong backward, shuffled labels,
  too little data): the repaired fraction is given over all faults and over fixable ones.

Targets (issue 5): >= 90% named, no false alarm, >= 80% repaired.

Run from the repository root (the entry points in ``benchmarks/doctor_setups.py`` resolve
with the working directory on ``sys.path``):

    .venv/bin/python benchmarks/doctor_suite.py [--fix] [--held-out] [--only NAME ...]
        [--runs-dir DIR]

``--held-out`` runs a second set of setups instead, on data, models and optimizers the
suite does not contain, with the same doctor defaults: the check that the thresholds
were not fitted to the suite.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gradwise import Finding
from gradwise.config import load_config
from gradwise.doctor import DoctorResult, diagnose
from gradwise.preprocess import ConstantFeatureWarning

F = Finding
SETUPS_MODULE = "benchmarks.doctor_setups"
#: Within this many accuracy points of the healthy baseline counts as repaired.
REPAIR_TOLERANCE = 0.02
#: Findings of these severities on a healthy setup are false alarms ("info" is not).
ALARM_SEVERITIES = ("warning", "error")

# The healthy reference setups. A digits MLP (2 hidden ReLU layers of 128, no norm,
# He init, AdamW 1e-3, batch 32, constant learning rate) is the base most faults are
# planted into.
DIGITS_MLP = (
    "data.dataset=digits",
    "data.batch_size=32",
    "model.name=mlp",
    "model.width=128",
    "model.norm=none",
    "optimizer={name: AdamW, lr: 0.001, weight_decay: 0.0}",
    "schedule=null",
)
DIGITS_EPOCHS = 8


@dataclass(frozen=True)
class Setup:
    """A setup of the suite: config overrides, the probe length, and what it plants.

    Attributes:
        name: short name.
        overrides: ``--set`` style overrides over the default config.
        epochs: probe epochs (None: the doctor's default, long enough for its trend window).
        accepted: the finding kinds that name the planted fault (empty: healthy).
        baseline: the healthy setup this fault was planted into (for ``--fix``).
        fixable: whether the doctor is expected to have an automatic fix.
        why: why these kinds name the fault (and why no fix, where none).
    """

    name: str
    overrides: tuple[str, ...]
    epochs: int | None
    accepted: frozenset[Finding] = frozenset()
    baseline: str | None = None
    fixable: bool = True
    why: str = ""

    @property
    def healthy(self) -> bool:
        return not self.accepted


HEALTHY = (
    Setup("digits-mlp-adamw", DIGITS_MLP, DIGITS_EPOCHS),
    # The default `gradwise train` model: BN cnn1d on MNIST-1D, AdamW 3e-3, cosine.
    Setup("mnist1d-cnn1d-default", (), 3),
    Setup(
        "spirals-mlp-sgd-momentum",
        (
            "data.dataset=spirals",
            "data.batch_size=16",
            "model.name=mlp",
            "model.depth=3",
            "model.width=64",
            "model.norm=none",
            "optimizer={name: SGD, lr: 0.05, momentum: 0.9}",
            "schedule=null",
        ),
        25,
    ),
    Setup(
        "moons-tanh-mlp-xavier",
        (
            "data.dataset=moons",
            "data.batch_size=32",
            "model.name=mlp",
            "model.width=64",
            "model.activation=tanh",
            "model.norm=none",
            "init.weights=xavier_normal",
            "optimizer={name: Adam, lr: 0.003}",
            "schedule=null",
        ),
        10,
    ),
    Setup(
        "digits-cnn2d-bn",
        (
            "data.dataset=digits",
            "data.batch_size=64",
            "model.name=cnn2d",
            "model.width=16",
            "optimizer={name: AdamW, lr: 0.003, weight_decay: 0.05}",
        ),
        4,
    ),
)


def _digits_fault(
    name: str, *changes: str, accepted: set[Finding], fixable: bool = True, why: str = ""
) -> Setup:
    return Setup(
        name,
        DIGITS_MLP + changes,
        DIGITS_EPOCHS,
        frozenset(accepted),
        "digits-mlp-adamw",
        fixable,
        why,
    )


FAULTS = (
    # The loss climbs or becomes NaN: both are what a too-large rate does.
    _digits_fault(
        "lr-100x-high",
        "optimizer.lr=0.1",
        accepted={F.LEARNING_RATE_TOO_HIGH, F.NONFINITE_LOSS},
        why="a rate 100x too high makes the loss climb (or overflow)",
    ),
    # Tiny update ratios with slow linear progress; a plateau is not the right name.
    _digits_fault(
        "lr-100x-low",
        "optimizer.lr=1e-5",
        accepted={F.LEARNING_RATE_TOO_LOW},
        why="update/weight ratios ~1e-5 and slow linear progress",
    ),
    # All-zero weights: every unit of a layer computes and learns the same thing.
    _digits_fault(
        "zero-init",
        "init.weights=zeros",
        accepted={F.SYMMETRIC_INIT},
        why="identical units get identical gradients (the lectures' symmetry argument)",
    ),
    # std 10 instead of ~0.1: logits in the thousands, so the loss at init is far above
    # chance, and the huge weights make gradients and updates misbehave.
    _digits_fault(
        "huge-init",
        "init.weights=normal",
        "init.options={std: 10.0}",
        accepted={F.INITIAL_LOSS_MISMATCH, F.EXPLODING_GRADIENTS, F.DEAD_UNITS},
        why="the loss at init is far above chance (logits scaled by ~100x)",
    ),
    # 20 sigmoid layers: the sigmoid's slope is at most 1/4, so gradients shrink
    # geometrically towards the input, and/or the units saturate. Its baseline is the
    # 2-layer MLP (strict: the fix changes the activation, not the depth).
    _digits_fault(
        "sigmoid-20-layers",
        "model.depth=20",
        "model.activation=sigmoid",
        "init.weights=xavier_normal",
        accepted={F.VANISHING_GRADIENTS, F.SATURATED_UNITS},
        why="gradients shrink by <= 1/4 per sigmoid layer",
    ),
    # Biases of -10 on standardized inputs: no pre-activation ever gets above 0.
    _digits_fault(
        "dead-relu-bias",
        "init.biases=-10.0",
        accepted={F.DEAD_UNITS},
        why="a large negative bias keeps every ReLU off on every sample",
    ),
    Setup(
        "unnormalized-1e3",
        (
            *DIGITS_MLP,
            f"data.dataset={SETUPS_MODULE}:scaled_digits",
            "data.preprocess=[]",
        ),
        DIGITS_EPOCHS,
        frozenset({F.UNNORMALIZED_INPUTS}),
        "unnormalized-1e3-standardized",
        why="feature scales 1e3 apart make the loss surface ill-conditioned",
    ),
    # A custom autograd Function with a wrong backward: only finite differences tell.
    # No automatic fix: the code must be corrected.
    _digits_fault(
        "wrong-backward",
        f"model.name={SETUPS_MODULE}:wrong_backward_mlp",
        accepted={F.WRONG_GRADIENT},
        fixable=False,
        why="analytic and numerical gradients disagree; only the code can be fixed",
    ),
    # 40 training samples, a wide 3-layer MLP: it memorizes them, validation lags.
    # No automatic fix: the cure is more data (regularization narrows the gap but cannot
    # reach the full-data baseline).
    Setup(
        "tiny-data-big-model",
        (
            *DIGITS_MLP,
            f"data.dataset={SETUPS_MODULE}:tiny_digits",
            "data.batch_size=8",
            "model.depth=3",
            "model.width=1024",
        ),
        40,
        frozenset({F.OVERFITTING}),
        "digits-mlp-adamw",
        fixable=False,
        why="train accuracy -> 100% while the validation loss rises: memorization",
    ),
    # Training labels permuted: nothing generalizes, so the validation accuracy stays at
    # chance (NO_LEARNING_SIGNAL) while the net may memorize the training labels
    # (OVERFITTING). No automatic fix: the labels are wrong.
    _digits_fault(
        "shuffled-labels",
        f"data.dataset={SETUPS_MODULE}:shuffled_digits",
        accepted={F.NO_LEARNING_SIGNAL, F.OVERFITTING},
        fixable=False,
        why="validation stays at chance; the data, not the training, is broken",
    ),
)

# Held out: setups the suite's calibration never saw, run with the same defaults to check
# that nothing was fitted to the suite (issue 5: "the same defaults must hold on setups the
# suite does not contain"). Other datasets (real MNIST digits, MNIST-1D, circles, blobs),
# models (GELU with layer norm, group-norm CNN, batch-norm MLP) and optimizers (SGD with
# Nesterov, RMSprop); the same ten fault classes planted into them, several by another
# mechanism (raw 0..255 pixels, a ReLU whose backward forgot its mask, a saturated tanh
# net). No threshold was changed after running them. Their first run found two bugs that
# were fixed (a new activation kept the old one's initializer; the default probe was too
# short for the trend window: docs/benchmarks.md).
MNIST5K_MLP = (
    "data.dataset=mnist5k",
    "data.batch_size=64",
    "model.name=mlp",
    "model.width=256",
    "model.depth=2",
    "model.norm=none",
    "optimizer={name: SGD, lr: 0.05, momentum: 0.9, nesterov: true}",
)
MNIST1D_MLP = (
    "data.dataset=mnist1d",
    "data.batch_size=64",
    "model.name=mlp",
    "model.width=128",
    "model.depth=2",
    "model.norm=none",
    "optimizer={name: RMSprop, lr: 0.001}",
    "schedule=null",
)
# Every held-out probe is as long as the doctor makes it by default (``epochs=None``: 3
# epochs, or more to reach 300 steps).
HELD_OUT_HEALTHY = (
    Setup("heldout-mnist5k-mlp-nesterov", MNIST5K_MLP, None),
    Setup("heldout-mnist1d-mlp-rmsprop", MNIST1D_MLP, None),
    Setup(
        "heldout-circles-bn-mlp-adam",
        (
            "data.dataset=circles",
            "data.batch_size=32",
            "model.name=mlp",
            "model.width=32",
            "model.depth=2",
            "model.norm=batch",
            "optimizer={name: Adam, lr: 0.01}",
            "schedule=null",
        ),
        None,
    ),
    Setup(
        "heldout-blobs-gelu-layernorm-sgd",
        (
            "data.dataset=blobs",
            "data.batch_size=32",
            "model.name=mlp",
            "model.width=64",
            "model.depth=2",
            "model.activation=gelu",
            "model.norm=layer",
            "optimizer={name: SGD, lr: 0.1, momentum: 0.9}",
            "schedule=null",
        ),
        None,
    ),
    Setup(
        "heldout-mnist1d-cnn1d-groupnorm-sgd",
        (
            "model.norm=group",
            "data.batch_size=64",
            "optimizer={name: SGD, lr: 0.05, momentum: 0.9}",
        ),
        None,
    ),
)


def _held_out_fault(
    name: str,
    base: Setup,
    *changes: str,
    accepted: set[Finding],
    fixable: bool = True,
    why: str = "",
) -> Setup:
    return Setup(
        name,
        base.overrides + changes,
        base.epochs,
        frozenset(accepted),
        base.name,
        fixable,
        why,
    )


_NESTEROV, _RMSPROP = HELD_OUT_HEALTHY[0], HELD_OUT_HEALTHY[1]
HELD_OUT_FAULTS = (
    _held_out_fault(
        "heldout-lr-100x-high",
        _RMSPROP,
        "optimizer.lr=0.1",
        accepted={F.LEARNING_RATE_TOO_HIGH, F.NONFINITE_LOSS},
        why="RMSprop at 100x its rate",
    ),
    _held_out_fault(
        "heldout-lr-100x-low",
        _NESTEROV,
        "optimizer.lr=0.0005",
        accepted={F.LEARNING_RATE_TOO_LOW},
        why="SGD with Nesterov momentum at 1/100 of its rate",
    ),
    _held_out_fault(
        "heldout-zero-init",
        _RMSPROP,
        "init.weights=zeros",
        accepted={F.SYMMETRIC_INIT},
        why="identical units get identical gradients",
    ),
    _held_out_fault(
        "heldout-huge-init",
        HELD_OUT_HEALTHY[3],
        "init.weights=normal",
        "init.options={std: 10.0}",
        accepted={F.INITIAL_LOSS_MISMATCH, F.EXPLODING_GRADIENTS, F.DEAD_UNITS},
        why="weights of std 10 under layer norm: the read-out's logits are huge",
    ),
    _held_out_fault(
        "heldout-tanh-20-layers-saturated",
        _RMSPROP,
        "model.depth=20",
        "model.activation=tanh",
        "init.weights=normal",
        "init.options={std: 1.0}",
        accepted={F.SATURATED_UNITS, F.VANISHING_GRADIENTS},
        why="std-1 weights on 128 inputs: pre-activations of std ~11 saturate every tanh",
    ),
    _held_out_fault(
        "heldout-dead-relu-bias",
        _NESTEROV,
        "init.biases=-10.0",
        accepted={F.DEAD_UNITS},
        why="a large negative bias keeps every ReLU off",
    ),
    _held_out_fault(
        "heldout-raw-pixels",
        _NESTEROV,
        "data.preprocess=[]",
        accepted={F.UNNORMALIZED_INPUTS},
        why="MNIST pixels 0..255, not standardized",
    ),
    _held_out_fault(
        "heldout-relu-backward-without-mask",
        _RMSPROP,
        f"model.name={SETUPS_MODULE}:wrong_relu_mlp",
        accepted={F.WRONG_GRADIENT},
        fixable=False,
        why="a custom ReLU whose backward forgot its mask; only the code can be fixed",
    ),
    _held_out_fault(
        "heldout-tiny-data-big-model",
        _RMSPROP,
        f"data.dataset={SETUPS_MODULE}:tiny",
        "data.options={dataset: mnist1d, samples: 50}",
        "data.batch_size=10",
        "model.depth=3",
        "model.width=512",
        accepted={F.OVERFITTING},
        fixable=False,
        why="50 training samples memorized by a wide MLP",
    ),
    _held_out_fault(
        "heldout-shuffled-labels",
        _RMSPROP,
        f"data.dataset={SETUPS_MODULE}:shuffled",
        "data.options={dataset: mnist1d}",
        accepted={F.NO_LEARNING_SIGNAL, F.OVERFITTING},
        fixable=False,
        why="permuted training labels",
    ),
)

#: Baselines that are not in HEALTHY (not counted as healthy setups of the suite).
EXTRA_BASELINES = (
    Setup(
        "unnormalized-1e3-standardized",
        (*DIGITS_MLP, f"data.dataset={SETUPS_MODULE}:scaled_digits"),
        DIGITS_EPOCHS,
    ),
)
SETUPS = {
    setup.name: setup
    for setup in HEALTHY + FAULTS + EXTRA_BASELINES + HELD_OUT_HEALTHY + HELD_OUT_FAULTS
}


@dataclass
class Outcome:
    """What the doctor said about one setup."""

    setup: Setup
    result: DoctorResult
    seconds: float
    baseline_accuracy: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def kinds(self) -> list[Finding]:
        return [f.kind for f in self.result.findings if f.severity in ALARM_SEVERITIES]

    @property
    def named(self) -> bool:
        return bool(self.setup.accepted & set(self.kinds))

    @property
    def alarm(self) -> bool:
        return self.setup.healthy and bool(self.kinds)

    @property
    def accuracy(self) -> float:
        return float(self.result.probe.metrics.get("val_accuracy", float("nan")))

    @property
    def fixed_accuracy(self) -> float | None:
        after = self.result.after
        return None if after is None else float(after.probe.metrics.get("val_accuracy", 0.0))

    @property
    def repaired(self) -> bool:
        fixed, baseline = self.fixed_accuracy, self.baseline_accuracy
        if fixed is None or baseline is None:
            return False
        return fixed >= baseline - REPAIR_TOLERANCE


def examine(setup: Setup, runs_dir: Path, *, fix: bool = False) -> Outcome:
    """Run the doctor on one setup (with ``fix`` for faults only)."""
    config = load_config(overrides=[*setup.overrides, f"runs_dir={runs_dir}"])
    torch.manual_seed(0)
    start = time.perf_counter()
    with warnings.catch_warnings():
        # digits has 3 constant pixels, which standardize says for every digits setup; the
        # suite scores findings, and the warning is the data's, not a finding.
        warnings.simplefilter("ignore", ConstantFeatureWarning)
        result = diagnose(config, fix=fix and not setup.healthy, probe_epochs=setup.epochs)
    return Outcome(setup, result, time.perf_counter() - start)


def run_suite(
    names: Sequence[str], runs_dir: Path, *, fix: bool = False, say: bool = True
) -> list[Outcome]:
    """Examine the named setups; with ``fix``, also their healthy baselines."""
    outcomes: dict[str, Outcome] = {}
    order = list(names)
    if fix:
        baselines = [SETUPS[n].baseline for n in names if SETUPS[n].baseline is not None]
        order = [b for b in dict.fromkeys(baselines) if b not in order and b] + order
    for name in order:
        outcome = examine(SETUPS[name], runs_dir, fix=fix)
        outcomes[name] = outcome
        if say:
            print(_line(outcome), flush=True)
    if fix:
        for outcome in outcomes.values():
            baseline = outcome.setup.baseline
            if baseline is not None:
                outcome.baseline_accuracy = outcomes[baseline].accuracy
    return [outcomes[name] for name in names]


def _line(outcome: Outcome) -> str:
    kinds = ", ".join(sorted({k.name for k in outcome.kinds})) or "-"
    accuracy, seconds = outcome.accuracy, outcome.seconds
    return f"  {outcome.setup.name}: {kinds} (val acc {accuracy:.3f}, {seconds:.0f} s)"


def report(outcomes: list[Outcome], *, fix: bool) -> str:
    """The suite's table and totals, as Markdown."""
    lines = [
        "| setup | kind | findings (warning/error) | named | false alarm | val acc |"
        + (" applied fix | fixed val acc | baseline | repaired |" if fix else ""),
        "|---|---|---|---|---|---|" + ("---|---|---|---|" if fix else ""),
    ]
    for o in outcomes:
        kinds = ", ".join(dict.fromkeys(k.name for k in o.kinds)) or "-"
        row = (
            f"| {o.setup.name} | {'healthy' if o.setup.healthy else 'fault'} | {kinds} | "
            f"{'-' if o.setup.healthy else ('yes' if o.named else 'NO')} | "
            f"{('YES' if o.alarm else 'no') if o.setup.healthy else '-'} | {o.accuracy:.3f} |"
        )
        if fix:
            row += _fix_cells(o)
        lines.append(row)
    lines += ["", *_totals(outcomes, fix=fix)]
    return "\n".join(lines)


def _fix_cells(o: Outcome) -> str:
    if o.setup.healthy:
        return " - | - | - | - |"
    applied = ", ".join(f"{k}={v}" for k, v in o.result.applied.items()) or "none"
    if not o.setup.fixable and not o.result.applied:
        applied = "none (by design)"
    fixed = "-" if o.fixed_accuracy is None else f"{o.fixed_accuracy:.3f}"
    baseline = "-" if o.baseline_accuracy is None else f"{o.baseline_accuracy:.3f}"
    return f" {applied} | {fixed} | {baseline} | {'yes' if o.repaired else 'no'} |"


def _totals(outcomes: list[Outcome], *, fix: bool) -> list[str]:
    faults = [o for o in outcomes if not o.setup.healthy]
    healthy = [o for o in outcomes if o.setup.healthy]
    named = sum(o.named for o in faults)
    alarms = sum(o.alarm for o in healthy)
    lines = [
        f"faults named correctly: {named}/{len(faults)} ({_share(named, len(faults))})",
        f"false alarms on healthy setups: {alarms}/{len(healthy)}",
    ]
    if fix:
        repaired = sum(o.repaired for o in faults)
        fixable = [o for o in faults if o.setup.fixable]
        repaired_fixable = sum(o.repaired for o in fixable)
        unfixable = ", ".join(o.setup.name for o in faults if not o.setup.fixable) or "none"
        lines += [
            f"repaired (within {REPAIR_TOLERANCE * 100:.0f} points of the healthy baseline): "
            f"{repaired}/{len(faults)} of all faults ({_share(repaired, len(faults))}), "
            f"{repaired_fixable}/{len(fixable)} of the fixable ones "
            f"({_share(repaired_fixable, len(fixable))})",
            f"no automatic fix by design: {unfixable}",
        ]
    seconds = sum(o.seconds for o in outcomes)
    lines.append(f"total doctor time: {seconds:.0f} s")
    return lines


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.0%}" if whole else "n/a"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fix", action="store_true", help="apply fixes and measure repair")
    parser.add_argument("--only", nargs="+", choices=sorted(SETUPS), help="a subset")
    parser.add_argument("--runs-dir", type=Path, help="where run folders go (default: temp)")
    parser.add_argument("--findings", action="store_true", help="print every finding")
    parser.add_argument(
        "--held-out",
        action="store_true",
        help="run the held-out setups (not the suite's) with the same defaults",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    group = HELD_OUT_HEALTHY + HELD_OUT_FAULTS if args.held_out else HEALTHY + FAULTS
    names = args.only or [s.name for s in group]
    with tempfile.TemporaryDirectory() as temporary:
        runs_dir = args.runs_dir or Path(temporary)
        outcomes = run_suite(names, runs_dir, fix=args.fix)
        if args.findings:
            for o in outcomes:
                print(f"\n{o.setup.name}:")
                for finding in o.result.findings:
                    print(f"  [{finding.severity}] {finding.kind.name}: {finding.summary}")
                if o.result.after is not None:
                    for finding in o.result.after.findings:
                        print(f"  after fix [{finding.severity}] {finding.kind.name}")
        print()
        print(report(outcomes, fix=args.fix))
    return 0


if __name__ == "__main__":
    sys.exit(main())
