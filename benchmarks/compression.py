"""Gradient compression for DDP: bytes on the wire per step, and the loss it costs.

Every configuration trains the same run with ``gradwise train``'s distributed path in 2
processes (gloo, CPU, one thread each) on this machine: MNIST-1D (4,000 training samples,
10% held out), an MLP 40-256-256-10 (78k parameters), SGD with momentum 0.9
(``--momentum``) and lr 0.05 (``--lr``), a global batch of 64, 8 epochs (504 steps), no
schedule (``--schedule default``: ``gradwise train``'s cosine with warmup), seed 0; the
same data order and initial weights everywhere. For each compression the table gives:

- bytes this rank put on the wire per step, averaged over the run (the hooks' counter:
  the payload each rank contributes to its collectives; plain fp32 allreduce counts 4
  bytes per gradient element), and its ratio to uncompressed DDP's;
- the final training loss (the last epoch's mean) and validation loss, and their
  relative difference to uncompressed DDP's.

Two more rows compare 1-bit Adam (freeze_step at 20% of the steps) with Adam (lr 1e-3) on
fp32 allreduce, its own baseline. The issue's target: the error-feedback 1-bit hooks
(``one_bit``, ``one_bit_two_phase``) within 2% of the uncompressed final loss with
momentum 0.9; the same scaled sign without error feedback (``one_bit`` with
``error_feedback: false``) shows why error feedback exists. The first 2 steps of every
hook are plain allreduce (DDP rebuilds its buckets after the first).

The remedies for the gap that momentum 0.9 opens (docs/distributed.md): finer scales
(``granularity: row``, one scale per output unit; ``two_level``, Seide et al. 2014's two
reconstruction values per row; both are the hooks' defaults, "defaults" in the labels)
and compressing after momentum (the hook's ``momentum: 0.9`` with an optimizer without
momentum, Zheng et al. 2019; "+mom"). "scale/tensor" rows ask for one scale per tensor.
Every row counts its scales in the bytes.

With ``--seeds 0 1 2`` every row runs once per seed (each seed its own data order and
initial weights, the same for every row) and the table gives the mean losses over the
seeds, the relative difference of those means, and the range of the per-seed
differences ("spread"): a single seed's difference includes how far two float orders of
the same run drift apart, a few percent in training loss at lr 0.05 (fp16 against fp32).

Run: .venv/bin/python benchmarks/compression.py [--lr 0.05] [--momentum 0.9] [--epochs 8]
[--nproc 2] [--schedule none|default] [--seeds 0 ...] [--only LABEL ...] (--only runs the
rows with those labels, plus their baselines)
"""

from __future__ import annotations

import argparse
import os
import tempfile
from typing import Any

from gradwise.config import config_to_dict, load_config
from gradwise.distributed import launch
from gradwise.train._distributed import train_rank

SGD = "{{name: SGD, lr: {lr}, momentum: {momentum}}}"
# With the hooks' momentum option (set to --momentum) the hook keeps the momentum: the
# optimizer has none.
SGD_NO_MOMENTUM = "{{name: SGD, lr: {lr}, momentum: 0.0}}"
ADAM = "{{name: Adam, lr: 0.001}}"
ONE_BIT_ADAM = "{{name: OneBitAdam, lr: 0.001, freeze_step: 100}}"  # 20% of 504 steps
# one_bit's and one_bit_two_phase's defaults are two scales per row (granularity "row",
# two_level); these options ask for one scale per tensor, their former defaults.
PER_TENSOR = {"granularity": "tensor", "two_level": False}
HOOK_MOMENTUM = {"momentum": 0.9}  # set to --momentum
# (label, compression, options, optimizer); each group's first row is its baseline.
CONFIGURATIONS: list[tuple[str, str, dict[str, Any], str]] = [
    ("fp32 allreduce (DDP)", "none", {}, SGD),
    ("fp16", "fp16", {}, SGD),
    ("PowerSGD rank 2", "powersgd", {"matrix_approximation_rank": 2}, SGD),
    ("1-bit EF (defaults)", "one_bit", {}, SGD),
    ("1-bit EF, scale/tensor", "one_bit", PER_TENSOR, SGD),
    ("1-bit EF, 1 scale/row", "one_bit", {"granularity": "row", "two_level": False}, SGD),
    ("1-bit EF, defaults+mom", "one_bit", HOOK_MOMENTUM, SGD_NO_MOMENTUM),
    ("1-bit EF, tensor+mom", "one_bit", {**PER_TENSOR, **HOOK_MOMENTUM}, SGD_NO_MOMENTUM),
    ("two-phase EF (defaults)", "one_bit_two_phase", {}, SGD),
    ("two-phase, scale/tensor", "one_bit_two_phase", PER_TENSOR, SGD),
    ("two-phase, defaults+mom", "one_bit_two_phase", HOOK_MOMENTUM, SGD_NO_MOMENTUM),
    (
        "two-phase, tensor+mom",
        "one_bit_two_phase",
        {**PER_TENSOR, **HOOK_MOMENTUM},
        SGD_NO_MOMENTUM,
    ),
    # Without error feedback one_bit's defaults are a scale per tensor: the scaled sign.
    ("scaled sign, no EF", "one_bit", {"error_feedback": False}, SGD),
    ("signSGD majority vote", "sign_majority", {}, SGD),
    ("Adam, fp32 allreduce", "none", {}, ADAM),
    ("1-bit Adam", "one_bit_adam", {}, ONE_BIT_ADAM),
]


def run(
    compression: str,
    options: dict[str, Any],
    optimizer: str,
    epochs: int,
    nproc: int,
    runs: str,
    seed: int,
    schedule: str = "none",
) -> Any:
    # "none": a constant learning rate; "default": gradwise train's own (cosine to zero
    # after a 5% linear warmup).
    schedule_overrides = ["schedule=null"] if schedule == "none" else []
    overrides = [
        *schedule_overrides, f"seed={seed}", f"epochs={epochs}", "monitor=null", "log_every=50",
        "data.dataset=mnist1d", "data.batch_size=64", "data.validation_split=0.1",
        "model.name=mlp", "model.width=256", "model.depth=2", "model.norm=none",
        f"optimizer={optimizer}", f"runs_dir={runs}",
        f"distributed.compression={compression}",
        f"distributed.compression_options={options}",
    ]  # fmt: skip
    config = config_to_dict(load_config(None, overrides))
    return launch(train_rank, (config, None, False), nproc)


def _selected(only: list[str] | None) -> list[tuple[str, str, dict[str, Any], str]]:
    if only is None:
        return CONFIGURATIONS
    unknown = set(only) - {label for label, *_ in CONFIGURATIONS}
    if unknown:
        raise SystemExit(f"unknown rows {sorted(unknown)}; the rows are the table's labels")
    wanted = set(only) | {CONFIGURATIONS[0][0]}  # the SGD baseline
    if "1-bit Adam" in wanted:
        wanted.add("Adam, fp32 allreduce")
    return [row for row in CONFIGURATIONS if row[0] in wanted]


def _losses(
    compression: str, options: dict[str, Any], optimizer: str, args: argparse.Namespace, runs: str
) -> tuple[float, list[float], list[float]]:
    """Bytes per step, and the final training and validation loss of each seed."""
    train, val = [], []
    for seed in args.seeds:
        result = run(
            compression, options, optimizer, args.epochs, args.nproc, runs, seed, args.schedule
        )
        final = result["summary"]["final"]
        per_step = result["bytes_sent"] / result["summary"]["steps"]
        train.append(final["train_loss"])
        val.append(final["val_loss"])
    return per_step, train, val


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _spread(values: list[float], baseline: list[float]) -> str:
    gaps = [(value - base) / base for value, base in zip(values, baseline, strict=True)]
    return f"{min(gaps):+.1%}..{max(gaps):+.1%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.05, help="SGD's learning rate")
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD's (or the hook's)")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument(
        "--schedule",
        choices=("none", "default"),
        default="none",
        help="none: a constant learning rate; default: gradwise train's (cosine, 5%% warmup)",
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="run every row once per seed"
    )
    parser.add_argument(
        "--only", nargs="+", metavar="LABEL", help="run these rows (and their baselines) only"
    )
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    rows = []
    with tempfile.TemporaryDirectory() as runs:
        for label, compression, options, optimizer in _selected(args.only):
            optimizer = optimizer.format(lr=args.lr, momentum=args.momentum)
            if "momentum" in options:
                options = {**options, "momentum": args.momentum}
            per_step, train, val = _losses(compression, options, optimizer, args, runs)
            rows.append((label, per_step, train, val, optimizer))
            print(f"done: {label}", flush=True)
    several = len(args.seeds) > 1
    if several:
        print(f"\nmeans over seeds {', '.join(map(str, args.seeds))}; spread: the per-seed"
              " differences to the baseline, lowest..highest")  # fmt: skip
    spread_header = f"{'spread':>18}" if several else ""
    print(f"\n{'compression':<24}{'bytes/step':>12}{'vs fp32':>9}{'train loss':>12}"
          f"{'vs DDP':>9}{spread_header}{'val loss':>10}{'vs DDP':>9}{spread_header}")  # fmt: skip
    baselines: dict[str, tuple[float, list[float], list[float]]] = {}
    for label, per_step, train, val, optimizer in rows:
        group = "adam" if "Adam" in optimizer else "sgd"
        base_bytes, base_train, base_val = baselines.setdefault(group, (per_step, train, val))
        train_mean, base_train_mean = _mean(train), _mean(base_train)
        val_mean, base_val_mean = _mean(val), _mean(base_val)
        train_spread = f"{_spread(train, base_train):>18}" if several else ""
        val_spread = f"{_spread(val, base_val):>18}" if several else ""
        print(f"{label:<24}{per_step:>12,.0f}{base_bytes / per_step:>8.1f}x{train_mean:>12.4f}"
              f"{(train_mean - base_train_mean) / base_train_mean:>+9.1%}{train_spread}"
              f"{val_mean:>10.4f}{(val_mean - base_val_mean) / base_val_mean:>+9.1%}"
              f"{val_spread}")  # fmt: skip


if __name__ == "__main__":
    main()
