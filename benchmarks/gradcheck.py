"""Gradient check time: gradwise.checks.gradcheck against torch.autograd.gradcheck.

A ReLU MLP 784-128-128-10 (118,282 parameters in 6 tensors), cross-entropy on a batch of
random MNIST-sized inputs, float64, one thread. Timed in the same process, min over
repeats, after one untimed warm-up call of each (gradwise's first call in a process also
pays a one-off ~1.4 s import inside torch, reported separately):

* gradwise ``gradcheck`` at its defaults (10 coordinates per tensor, 2 forwards each, one
  backward);
* ``torch.autograd.gradcheck(fast_mode=True)``: one random projection per tensor;
* ``torch.autograd.gradcheck`` default mode: the full numerical Jacobian, 2 forwards per
  parameter. Far too slow for the whole model on this machine, so by default it is timed
  on a subset of tensors (the two biases of the hidden layers and the output layer:
  1,546 parameters; the other tensors are held fixed) and extrapolated linearly in the
  number of parameters to the whole model (its cost is one forward pair per parameter
  plus one backward); ``--full-default`` times it on everything instead.

Run: .venv/bin/python benchmarks/gradcheck.py [--batch 32] [--repeats 5] [--full-default]
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from gradwise.checks import GradcheckReport, gradcheck

SUBSET = ("3.bias", "5.weight", "5.bias", "1.bias")


def make_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
        nn.Linear(128, 10),
    )  # fmt: skip


def torch_check(
    model: nn.Module, inputs: Tensor, targets: Tensor, names: tuple[str, ...], fast: bool
) -> bool:
    """torch.autograd.gradcheck over the named parameters (the others held fixed)."""
    model = copy.deepcopy(model).double()
    fixed = {k: v.detach() for k, v in model.named_parameters() if k not in names}
    names = tuple(k for k, _ in model.named_parameters() if k in names)
    checked = tuple(v.detach().clone().requires_grad_(True) for k, v in model.named_parameters()
                    if k in names)  # fmt: skip

    def loss(*tensors: Tensor) -> Tensor:
        params = {**fixed, **dict(zip(names, tensors, strict=True))}
        return F.cross_entropy(functional_call(model, params, (inputs,)), targets)

    return torch.autograd.gradcheck(loss, checked, fast_mode=fast, raise_exception=False)


def best_time(run: Callable[[], object], repeats: int, warmup: bool = True) -> tuple[float, object]:
    result = run() if warmup else None
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--full-default", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = make_model()
    total = sum(p.numel() for p in model.parameters())
    generator = torch.Generator().manual_seed(1)
    inputs = torch.rand(args.batch, 1, 28, 28, generator=generator)
    targets = torch.randint(0, 10, (args.batch,), generator=generator)
    inputs64 = inputs.double()
    names = tuple(k for k, _ in model.named_parameters())
    subset = names if args.full_default else SUBSET
    subset_size = sum(p.numel() for k, p in model.named_parameters() if k in subset)
    print(
        f"torch {torch.__version__}, 1 thread; MLP 784-128-128-10 (ReLU), {total} parameters "
        f"in {len(names)} tensors; batch {args.batch}; min of {args.repeats} after a warm-up"
    )

    start = time.perf_counter()
    gradcheck(make_model(), F.cross_entropy, inputs, targets)
    print(f"gradwise first call in the process: {time.perf_counter() - start:.3f} s")

    ours, report = best_time(
        lambda: gradcheck(model, F.cross_entropy, inputs, targets), args.repeats
    )
    if not isinstance(report, GradcheckReport):
        raise TypeError(f"expected a GradcheckReport, got {type(report).__name__}")
    fast, fast_passed = best_time(
        lambda: torch_check(model, inputs64, targets, names, fast=True), args.repeats
    )
    # The default mode runs once, without a warm-up: on the whole model it takes minutes.
    default, default_passed = best_time(
        lambda: torch_check(model, inputs64, targets, subset, fast=False), 1, warmup=False
    )
    rows = [
        ("gradwise gradcheck, defaults", ours, f"{len(report.coordinates)} coordinates",
         report.passed),
        ("torch gradcheck, fast_mode=True", fast, "1 projection per tensor", fast_passed),
    ]  # fmt: skip
    if not args.full_default:
        rows.append((f"torch gradcheck, default, {subset_size} params", default,
                     "full Jacobian, measured", default_passed))  # fmt: skip
    rows.append((
        "torch gradcheck, default, whole model", default * total / subset_size,
        "full Jacobian, " + ("measured" if args.full_default else "extrapolated"),
        default_passed,
    ))  # fmt: skip
    print(f"{'method':<44}{'time':>10}{'/ gradwise':>12}  {'checks':<32}passed")
    for name, seconds, what, passed in rows:
        print(f"{name:<44}{seconds:>9.3f}s{seconds / ours:>11.1f}x  {what:<32}{passed}")


if __name__ == "__main__":
    main()
