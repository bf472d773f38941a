"""Hessian spectrum cost: gradwise.curvature (Lanczos) against PyHessian (power iteration).

On a tanh MLP 12-32-24-6 (1,358 parameters, float64, cross-entropy on 256 random samples)
after 50 Adam steps, and the same MLP at initialization, the exact Hessian comes from
torch.func.hessian over the flat parameters. For each method and a sweep of its
tolerance, the script counts the Hessian-vector products (HVPs) it used and its error:

* top eigenvalue, target 1e-4 relative error;
* top 5 eigenvalues, target 1e-3 relative error (each);
* trace with 100 HVPs, target 5%: Hutchinson (Rademacher probes) and Hutch++ (a third of
  them sketch the top of the spectrum, whose trace is then taken exactly).

gradwise counts with ``Hessian.num_products``; PyHessian (``from pyhessian import
hessian``, cuda=False, run on a deep copy because it writes .grad) by wrapping its
module-level ``hessian_vector_product``. The row "HVPs to target" is the fewest products
of any tolerance in the sweep that reached the target. Both run in this process, on the
same model and batch, in float64 (torch's default dtype is set to float64 because
PyHessian draws its vectors with the default dtype).

Then one HVP is timed against one gradient (forward + backward), min over repeats, on the
small MLP and on an MLP 784-128-128-10 (118,282 parameters, batch 128, float32): one
batch, two batches with their graphs kept (the default up to 16 batches: one double
backward per batch and product), and two batches with graphs rebuilt for every product
(``keep_graphs=0``, what happens beyond 16 batches).

Run: .venv/bin/python benchmarks/hessian.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import copy
import importlib
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from pyhessian import hessian as PyHessian
from torch import Tensor, nn
from torch.func import functional_call

from gradwise.curvature import Hessian

TOLERANCES = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 1e-6, 1e-7)


def mlp(sizes: tuple[int, ...], seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=False):
        layers += [nn.Linear(fan_in, fan_out), nn.Tanh()]
    return nn.Sequential(*layers[:-1])


def setup(trained: bool) -> tuple[nn.Module, tuple[Tensor, Tensor]]:
    model = mlp((12, 32, 24, 6))
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(256, 12, generator=generator)
    targets = torch.randint(0, 6, (256,), generator=generator)
    if trained:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(50):
            optimizer.zero_grad()
            F.cross_entropy(model(inputs), targets).backward()
            optimizer.step()
        model.zero_grad(set_to_none=True)
    return model, (inputs, targets)


def exact_hessian(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss_of(vector: Tensor) -> Tensor:
        pieces = torch.split(vector, sizes)
        params = {n: x.view(s) for n, x, s in zip(names, pieces, shapes, strict=True)}
        return F.cross_entropy(functional_call(model, params, (batch[0],)), batch[1])

    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # inside torch's forward AD
        return torch.func.hessian(loss_of)(flat)


class Counter:
    """Wraps PyHessian's module-level hessian_vector_product to count its calls."""

    def __init__(self) -> None:
        self.count = 0
        self.original = importlib.import_module("pyhessian.hessian").hessian_vector_product

    def __call__(self, *args: Any) -> Any:
        self.count += 1
        return self.original(*args)


# pyhessian/__init__.py rebinds the name "hessian" to the class, so fetch the module itself.
pyhessian_module = importlib.import_module("pyhessian.hessian")
COUNTER = Counter()
pyhessian_module.hessian_vector_product = COUNTER


def relative_errors(found: list[float], exact: Tensor) -> float:
    found_sorted = torch.tensor(sorted(found, reverse=True), dtype=torch.float64)
    return float(((found_sorted - exact) / exact).abs().max())


def gradwise_top(model: nn.Module, batch: Any, k: int, tol: float) -> tuple[list[float], int]:
    hessian = Hessian(model, F.cross_entropy, batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        values, _ = hessian.eigenvalues(k, tol=tol, max_iterations=1000)
    return values.tolist(), hessian.num_products


def pyhessian_top(model: nn.Module, batch: Any, k: int, tol: float) -> tuple[list[float], int]:
    torch.manual_seed(0)
    probe = PyHessian(copy.deepcopy(model), F.cross_entropy, data=batch, cuda=False)
    COUNTER.count = 0
    values, _ = probe.eigenvalues(maxIter=1000, tol=tol, top_n=k)
    return list(values), COUNTER.count


def sweep(
    name: str,
    method: Callable[[nn.Module, Any, int, float], tuple[list[float], int]],
    model: nn.Module,
    batch: Any,
    k: int,
    exact: Tensor,
    target: float,
) -> int | None:
    best = None
    cells = []
    for tol in TOLERANCES:
        values, count = method(model, batch, k, tol)
        error = relative_errors(values, exact)
        cells.append(f"{tol:.0e}:{count}/{error:.0e}")
        if error < target and (best is None or count < best):
            best = count
    print(f"  {name:<34} HVPs to target: {best!s:>5}   tol:HVPs/error  " + "  ".join(cells))
    return best


def traces(model: nn.Module, batch: Any, exact_trace: float) -> None:
    for method in ("gauss-newton", "stratified", "hutchinson", "hutch++"):
        hessian = Hessian(model, F.cross_entropy, batch)
        errors, seconds = [], []
        for seed in range(10):
            start = time.perf_counter()
            estimate = hessian.trace(num_probes=100, seed=seed, method=method)
            seconds.append(time.perf_counter() - start)
            errors.append(abs(estimate / exact_trace - 1))
        print(
            f"  gradwise trace ({method}), 100 probes x 10 seeds: max error {max(errors):.3f}, "
            f"mean {sum(errors) / 10:.3f}, {hessian.num_products // 10} products each, "
            f"median {statistics.median(seconds) * 1e3:.0f} ms"
        )
    errors, counts = [], []
    for seed in range(10):
        torch.manual_seed(seed)
        probe = PyHessian(copy.deepcopy(model), F.cross_entropy, data=batch, cuda=False)
        COUNTER.count = 0
        samples = probe.trace(maxIter=100, tol=1e-12)
        errors.append(abs(sum(samples) / len(samples) / exact_trace - 1))
        counts.append(COUNTER.count)
    print(f"  PyHessian trace, 100 probes x 10 seeds: max error {max(errors):.3f}, "
          f"mean {sum(errors) / 10:.3f}, {max(counts)} HVPs each")  # fmt: skip


def spectrum_rows(trained: bool) -> None:
    model, batch = setup(trained)
    exact = exact_hessian(model, batch)
    values = torch.linalg.eigvalsh(exact).flip(0)
    label = "after 50 Adam steps" if trained else "at initialization"
    print(f"\nMLP 12-32-24-6, {exact.shape[0]} parameters, {label}: "
          f"top eigenvalues {[round(v, 4) for v in values[:6].tolist()]}, "
          f"trace {exact.trace().item():.4f}")  # fmt: skip
    for k, target in ((1, 1e-4), (5, 1e-3)):
        print(f" top {k}, target relative error {target:g}:")
        ours = sweep("gradwise Lanczos", gradwise_top, model, batch, k, values[:k], target)
        theirs = sweep(
            "PyHessian power iteration", pyhessian_top, model, batch, k, values[:k], target
        )
        if ours and theirs:
            print(f"  -> PyHessian needs {theirs / ours:.1f}x the HVPs")
    traces(model, batch, exact.trace().item())


def interleaved_min_times(functions: list[Callable[[], Any]], repeats: int) -> list[float]:
    """The fastest of ``repeats`` timings of each function, taken in turns (one call of
    each per round), so that a slow stretch of a shared machine slows all of them."""
    for function in functions:
        function()
    times: list[list[float]] = [[] for _ in functions]
    for _ in range(repeats):
        for function, own in zip(functions, times, strict=True):
            start = time.perf_counter()
            function()
            own.append(time.perf_counter() - start)
    return [min(own) for own in times]


def timing_rows(
    model: nn.Module, inputs: Tensor, targets: Tensor, label: str, repeats: int
) -> None:
    params = list(model.parameters())

    def gradient() -> None:
        torch.autograd.grad(F.cross_entropy(model(inputs), targets), params)

    single = Hessian(model, F.cross_entropy, (inputs, targets))
    half = inputs.shape[0] // 2
    halves = [(inputs[:half], targets[:half]), (inputs[half:], targets[half:])]
    kept = Hessian(model, F.cross_entropy, halves)
    rebuilt = Hessian(model, F.cross_entropy, halves, keep_graphs=0)
    vector = torch.randn(single.num_parameters, dtype=single.dtype)
    products = {
        "one batch": single, "two batches, graphs kept": kept,
        "two batches, graphs rebuilt": rebuilt,
    }  # fmt: skip
    grad_time, *product_times = interleaved_min_times(
        [gradient, *(lambda h=hessian: h @ vector for hessian in products.values())], repeats
    )
    print(f"  {label}: gradient {grad_time * 1e3:.2f} ms; HVP", end="")
    for name, seconds in zip(products, product_times, strict=True):
        print(f" | {name} {seconds * 1e3:.2f} ms = {seconds / grad_time:.2f}x", end="")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    # PyHessian calls loss.backward(create_graph=True), which torch warns about each time.
    warnings.filterwarnings("ignore", "Using backward\\(\\) with create_graph=True")
    print(f"torch {torch.__version__}, 1 thread, float64")
    spectrum_rows(trained=True)
    spectrum_rows(trained=False)
    print("\nOne HVP against one gradient (min of repeats, taken in turns):")
    model, batch = setup(trained=False)
    timing_rows(model, *batch, "MLP 12-32-24-6 float64, batch 256", args.repeats)
    torch.set_default_dtype(torch.float32)
    big = mlp((784, 128, 128, 10)).float()
    inputs = torch.randn(128, 784)
    targets = torch.randint(0, 10, (128,))
    timing_rows(big, inputs, targets, "MLP 784-128-128-10 float32, batch 128", args.repeats)


if __name__ == "__main__":
    main()
