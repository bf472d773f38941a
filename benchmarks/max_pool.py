"""gradwise.models.HalvingMaxPool against torch's MaxPool1d(2)/MaxPool2d(2) on the CPU.

Two comparisons, each timing torch's layer and gradwise's in the same process:

- **layer**: forward + backward (``torch.autograd.grad``) of the pooling alone on the
  feature maps the built-in CNNs pool (batch 128: the default ``cnn1d``'s three on
  MNIST-1D, ``cnn2d``'s two on 28x28 MNIST), and the forward under ``torch.no_grad`` (an
  evaluation pass, the monitor's probe);
- **training step**: a whole step (forward, ``F.cross_entropy``, ``zero_grad``, backward,
  ``gradwise.optim.AdamW`` step) of the default ``cnn1d`` on (128, 1, 40) and of
  ``cnn2d`` on (128, 1, 28, 28), once with its own pooling layers and once with torch's
  in their place, from the same weights on the same batches; the script checks that both
  end with bit-identical weights.

Each timing is the time of a loop of calls; the two sides alternate, each repeat in a
rotated order, and the table gives the medians and minimums over the repeats and the
ratio torch / gradwise of the minimums (above 1: gradwise faster). One thread.

Run: .venv/bin/python benchmarks/max_pool.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gradwise import optim
from gradwise.models import HalvingMaxPool, cnn1d, cnn2d

LAYER_SHAPES = [
    (1, (128, 32, 40)),
    (1, (128, 32, 20)),
    (1, (128, 32, 10)),
    (2, (128, 32, 28, 28)),
    (2, (128, 32, 14, 14)),
]


def time_loop(function: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - start) / calls


def compare(
    sides: dict[str, Callable[[], object]], calls: int, repeats: int
) -> dict[str, list[float]]:
    for function in sides.values():  # warmup
        time_loop(function, max(1, calls // 5))
    times: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for repeat in range(repeats):
        order = names[repeat % 2 :] + names[: repeat % 2]
        for name in order:
            times[name].append(time_loop(sides[name], calls))
    return times


def with_torch_pooling(model: nn.Sequential) -> nn.Sequential:
    for index, layer in enumerate(model):
        if isinstance(layer, HalvingMaxPool):
            model[index] = (nn.MaxPool1d if layer.spatial_dims == 1 else nn.MaxPool2d)(2)
    return model


def layer_sides(
    spatial_dims: int, shape: tuple[int, ...], no_grad: bool
) -> dict[str, Callable[[], object]]:
    inputs = torch.randn(shape).relu().requires_grad_(not no_grad)
    torch_pool = (nn.MaxPool1d if spatial_dims == 1 else nn.MaxPool2d)(2)
    ours = HalvingMaxPool(spatial_dims)  # type: ignore[arg-type]
    upstream = torch.randn(torch_pool(inputs).shape)

    def run(pool: nn.Module) -> Callable[[], object]:
        if no_grad:
            return torch.no_grad()(lambda: pool(inputs))
        return lambda: torch.autograd.grad(pool(inputs), inputs, upstream)

    return {"torch": run(torch_pool), "gradwise": run(ours)}


def step_sides(
    builder: Callable[..., nn.Sequential], shape: tuple[int, ...]
) -> tuple[dict[str, Callable[[], object]], Callable[[], bool]]:
    torch.manual_seed(0)
    ours = builder(shape, 10)
    theirs = with_torch_pooling(builder(shape, 10))
    theirs.load_state_dict(ours.state_dict())
    generator = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(128, *shape, generator=generator), torch.randint(0, 10, (128,)))
        for _ in range(8)
    ]

    def stepper(model: nn.Module) -> Callable[[], object]:
        optimizer = optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
        count = [0]

        def step() -> None:
            inputs, targets = batches[count[0] % len(batches)]
            count[0] += 1
            loss = F.cross_entropy(model(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()

        return step

    def identical() -> bool:
        return all(
            torch.equal(a, b)
            for a, b in zip(ours.state_dict().values(), theirs.state_dict().values(), strict=True)
        )

    return {"torch": stepper(theirs), "gradwise": stepper(ours)}, identical


def row(label: str, times: dict[str, list[float]]) -> str:
    cells = []
    for name in ("torch", "gradwise"):
        cells.append(f"{statistics.median(times[name]) * 1e3:9.3f} {min(times[name]) * 1e3:9.3f}")
    ratio = min(times["torch"]) / min(times["gradwise"])
    return f"{label:38s} {cells[0]}   {cells[1]}   {ratio:6.2f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, {args.repeats} repeats, times in ms per call")
    header = (
        f"{'':38s} {'torch median':>12s} {'min':>6s}   {'gradwise median':>15s} {'min':>3s}"
        "   torch/gradwise (min)"
    )
    print(header)
    print("-" * len(header))
    for no_grad in (False, True):
        for spatial_dims, shape in LAYER_SHAPES:
            calls = 20 if spatial_dims == 2 and shape[-1] == 28 else 100
            times = compare(layer_sides(spatial_dims, shape, no_grad), calls, args.repeats)
            kind = "forward, no_grad" if no_grad else "forward + backward"
            print(row(f"{kind} {shape}", times))
    all_identical = True
    for builder, shape, calls in ((cnn1d, (1, 40), 50), (cnn2d, (1, 28, 28), 5)):
        sides, identical = step_sides(builder, shape)
        times = compare(sides, calls, args.repeats)
        print(row(f"training step, {builder.__name__} {shape}", times))
        all_identical &= identical()
    print(f"same weights after the training steps: {all_identical}")


if __name__ == "__main__":
    main()
