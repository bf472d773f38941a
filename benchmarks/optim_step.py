"""Optimizer step time against torch.optim and against the memory-bandwidth floor.

10M float32 parameters in 100 tensors, one thread. For every named optimizer this prints
the median step time of gradwise's default path and of its compiled path, the ratio of the
faster one to torch's fastest implementation of the same algorithm (fused where torch has
one; else, on a GPU its foreach kernels, on the CPU its single-tensor loop, which there ran
1.3-2.6x faster than its foreach kernels: see docs/benchmarks.md), and the ratio to the
memory floor: the bytes the algorithm must read
and write per parameter (Adam: read p, g, m, v and write p, m, v = 28 B) divided by the copy
bandwidth measured in this run. State bytes per parameter are printed too.

Run: .venv/bin/python benchmarks/optim_step.py [--only NAME ...] [--repeats 30] [--device cuda]
The first compiled step of each optimizer compiles (about 40 s each on a 2-core CPU with a
cold inductor cache); later runs reuse inductor's on-disk cache.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from gradwise import optim

NUM_PARAMETERS = 10_000_000
NUM_TENSORS = 100
WARMUP_STEPS = 3

Make = Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[..., torch.optim.Optimizer]  # gradwise, takes implementation=
    torch_fastest: Make | None
    #: Bytes per parameter the algorithm must read and write in one pass over the state.
    floor_bytes: int
    #: Allowed ratio to the floor (element-wise 1.5; layer-wise trust ratios need a norm pass).
    floor_target: float = 1.5


def _foreach_is_fastest(params: list[torch.nn.Parameter]) -> bool:
    """torch's fastest path where it has no fused kernel: foreach on a GPU; on the CPU the
    single-tensor loop, whose per-tensor passes stay in cache (foreach=False; torch's own
    default there too)."""
    return params[0].device.type != "cpu"


CASES = [
    Case(
        "SGD",
        lambda p, **k: optim.SGD(p, lr=0.01, **k),
        lambda p: torch.optim.SGD(p, lr=0.01, fused=True),
        12,
    ),
    Case(
        "SGD momentum",
        lambda p, **k: optim.SGD(p, lr=0.01, momentum=0.9, **k),
        lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, fused=True),
        20,
    ),
    Case(
        "SGD nesterov",
        lambda p, **k: optim.SGD(p, lr=0.01, momentum=0.9, nesterov=True, **k),
        lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, nesterov=True, fused=True),
        20,
    ),
    Case(
        "Adagrad",
        lambda p, **k: optim.Adagrad(p, **k),
        # torch's fused Adagrad refuses CUDA tensors: foreach is its fastest there.
        lambda p: (
            torch.optim.Adagrad(p, fused=True)
            if p[0].device.type != "cuda"
            else torch.optim.Adagrad(p, foreach=True)
        ),
        20,
    ),
    Case(
        "RMSprop",
        lambda p, **k: optim.RMSprop(p, **k),
        lambda p: torch.optim.RMSprop(p, foreach=_foreach_is_fastest(p)),
        20,
    ),
    Case(
        "Adadelta",
        lambda p, **k: optim.Adadelta(p, **k),
        lambda p: torch.optim.Adadelta(p, foreach=_foreach_is_fastest(p)),
        28,
    ),
    Case("Adam", lambda p, **k: optim.Adam(p, **k), lambda p: torch.optim.Adam(p, fused=True), 28),
    Case(
        "AMSGrad",
        lambda p, **k: optim.Adam(p, amsgrad=True, **k),
        lambda p: torch.optim.Adam(p, amsgrad=True, fused=True),
        36,
    ),
    Case(
        "AdamW", lambda p, **k: optim.AdamW(p, **k), lambda p: torch.optim.AdamW(p, fused=True), 28
    ),
    Case(
        "NAdam",
        lambda p, **k: optim.NAdam(p, **k),
        lambda p: torch.optim.NAdam(p, foreach=_foreach_is_fastest(p)),
        28,
    ),
    Case(
        "RAdam",
        lambda p, **k: optim.RAdam(p, **k),
        lambda p: torch.optim.RAdam(p, foreach=_foreach_is_fastest(p)),
        28,
    ),
    Case(
        "LARS", lambda p, **k: optim.LARS(p, lr=0.1, momentum=0.9, **k), None, 20, floor_target=2.0
    ),
    Case("LAMB", lambda p, **k: optim.LAMB(p, **k), None, 28, floor_target=2.0),
    Case("SWATS", lambda p, **k: optim.SWATS(p, **k), None, 28),
    Case("SignSGD", lambda p, **k: optim.SignSGD(p, lr=0.01, momentum=0.9, **k), None, 20),
    Case(
        "SignSGD EF", lambda p, **k: optim.SignSGD(p, lr=0.01, error_feedback=True, **k), None, 20
    ),
    Case("OneBitSGD", lambda p, **k: optim.OneBitSGD(p, lr=0.01, **k), None, 20),
]


DEVICE = torch.device("cpu")


def make_parameters() -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(0)
    size = NUM_PARAMETERS // NUM_TENSORS
    params = [
        torch.nn.Parameter(torch.randn(size, generator=generator).to(DEVICE))
        for _ in range(NUM_TENSORS)
    ]
    for p in params:
        p.grad = (torch.randn(size, generator=generator) * 1e-2).to(DEVICE)
    return params


def synchronize() -> None:
    """Wait for queued kernels, so that a GPU step is timed, not just launched."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def time_interleaved(steps: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, timed in rotation after warmup.

    Rotating (A, B, C, A, B, C, ...) exposes every variant to the same drift in machine
    load, which on a shared 2-core machine is larger than the differences being measured.
    """
    for step in steps.values():
        for _ in range(WARMUP_STEPS):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            synchronize()
            start = time.perf_counter()
            step()
            synchronize()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(samples) for name, samples in times.items()}


def copy_bandwidth(repeats: int) -> float:
    """Bytes per second of a copy (read + write) over the benchmark's tensors, best of runs."""
    sources = [p.detach() for p in make_parameters()]
    targets = [p.detach() for p in make_parameters()]
    for _ in range(WARMUP_STEPS):
        torch._foreach_copy_(targets, sources)
    fastest = math.inf
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        torch._foreach_copy_(targets, sources)
        synchronize()
        fastest = min(fastest, time.perf_counter() - start)
    return 8 * NUM_PARAMETERS / fastest


def state_bytes_per_parameter(optimizer: torch.optim.Optimizer) -> float:
    total = 0
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor):
                total += value.numel() * value.element_size()
    return total / NUM_PARAMETERS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", help="optimizer names to run (default: all)")
    parser.add_argument("--repeats", type=int, default=30, help="timed steps per measurement")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    global DEVICE
    DEVICE = torch.device(args.device)

    bandwidth = copy_bandwidth(args.repeats)
    print(f"torch {torch.__version__}, {NUM_PARAMETERS:,} float32 parameters", end=" ")
    print(f"in {NUM_TENSORS} tensors on {DEVICE}, 1 CPU thread")
    print(f"copy bandwidth: {bandwidth / 1e9:.1f} GB/s (best of {args.repeats} copies)")
    print(f"median of {args.repeats} steps per optimizer, variants timed in rotation\n")
    header = (
        f"{'optimizer':<13} {'default':>17} {'compiled':>10} {'torch best':>11} {'vs torch':>9} "
        f"{'floor':>8} {'vs floor':>9} {'target':>7} {'state B/param':>14}"
    )
    print(header)
    print("-" * len(header))
    for case in CASES:
        if args.only and case.name not in args.only:
            continue
        optimizers = {
            "default": case.make(make_parameters()),
            "compiled": case.make(make_parameters(), implementation="compiled"),
        }
        if case.torch_fastest is not None:
            optimizers["torch"] = case.torch_fastest(make_parameters())
        medians = time_interleaved(
            {name: opt.step for name, opt in optimizers.items()}, args.repeats
        )
        default, compiled = medians["default"], medians["compiled"]
        best = min(default, compiled)
        floor = case.floor_bytes * NUM_PARAMETERS / bandwidth
        torch_text, versus_torch = "-", "-"
        if "torch" in medians:
            torch_text = f"{medians['torch'] * 1e3:.2f} ms"
            versus_torch = f"{best / medians['torch']:.2f}x"
        path = optimizers["default"].last_implementations[0]  # type: ignore[attr-defined]
        state_bytes = state_bytes_per_parameter(optimizers["default"])
        print(
            f"{case.name:<13} {default * 1e3:>7.2f} ms {path:<9}{compiled * 1e3:>7.2f} ms "
            f"{torch_text:>11} {versus_torch:>9} {floor * 1e3:>5.2f} ms {best / floor:>8.2f}x "
            f"{case.floor_target:>6.1f}x {state_bytes:>14.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
