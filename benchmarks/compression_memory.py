"""How large the 1-bit hooks' error memory grows: ||e|| / ||g|| per layer over a run.

The run of benchmarks/compression.py (MNIST-1D, 3,600 training samples standardized per
feature, an MLP 40-256-256-10, a global batch of 64 on 2 gloo processes, 504 steps, seed
0, lr 0.05), in a plain DDP loop of its own, so that each step can also compute this
rank's own gradient ``g`` (a second backward pass through the module, outside DDP) and
read the hook's memory ``e`` after the step. For each configuration and weight matrix it
prints the median over the compressed steps of ``||e|| / ||g||`` on rank 0, and the
final training loss on the whole training set. The configurations: ``one_bit`` with one
scale per tensor and SGD momentum 0.9; with per-row two-level scales; and with the
hook's momentum 0.9 (SGD without momentum, where ``e`` is the memory of the compressed
momentum but the ratio is still taken to ``||g||``).

"lag" is that ratio divided by ``1 - momentum`` of the optimizer: the weights trail the
uncompressed trajectory by about ``lr ||e|| / (1 - momentum)``, so the lag is that
distance in steps of ``lr ||g||``.

Run: .venv/bin/python benchmarks/compression_memory.py [--lr 0.05] [--steps 504]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from gradwise.data import load_dataset
from gradwise.distributed import register_compression
from gradwise.models import mlp

# one_bit's defaults are two scales per row; these rows ask for one per tensor.
PER_TENSOR = {"granularity": "tensor", "two_level": False}
# (label, one_bit options, SGD momentum)
CONFIGURATIONS: list[tuple[str, dict[str, Any], float]] = [
    ("scale per tensor", PER_TENSOR, 0.9),
    ("row 2-level", {"granularity": "row", "two_level": True}, 0.9),
    ("hook momentum", {**PER_TENSOR, "momentum": 0.9}, 0.0),
]
WORLD_SIZE, BATCH = 2, 64


def _train(rank: int, options: dict[str, Any], momentum: float, lr: float, steps: int) -> Any:
    splits = load_dataset("mnist1d", seed=0, test_split=0.0)
    x, y = splits.train.inputs.float(), splits.train.targets.long()
    x = (x - x.mean(0)) / (x.std(0) + 1e-8)
    torch.manual_seed(0)
    module = mlp((1, 40), 10, depth=2, width=256)
    model = DistributedDataParallel(module)
    state = register_compression(model, "one_bit", **options)
    if state is None:
        raise RuntimeError("one_bit registers a hook")
    optimizer = torch.optim.SGD(module.parameters(), lr=lr, momentum=momentum)
    weights = [name for name, p in module.named_parameters() if p.dim() == 2]
    ratios: dict[str, list[float]] = {name: [] for name in weights}
    shuffle = torch.Generator().manual_seed(0)  # the same order on both ranks
    order, position = torch.randperm(len(x), generator=shuffle), 0
    per_rank = BATCH // WORLD_SIZE
    for _ in range(steps):
        if position + BATCH > len(x):
            order, position = torch.randperm(len(x), generator=shuffle), 0
        batch = order[position : position + BATCH][rank * per_rank : (rank + 1) * per_rank]
        position += BATCH
        own = torch.autograd.grad(
            torch.nn.functional.cross_entropy(module(x[batch]), y[batch]),
            list(module.parameters()),
        )
        gradients = dict(zip([n for n, _ in module.named_parameters()], own, strict=True))
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
        optimizer.step()
        for name in weights:
            if name in state.worker_error:
                error = state.worker_error[name].norm() / gradients[name].norm()
                ratios[name].append(float(error))
    with torch.no_grad():
        loss = float(torch.nn.functional.cross_entropy(module(x), y))
    return {"ratios": {n: statistics.median(r) for n, r in ratios.items()}, "loss": loss}


def _rank(rank: int, init: str, out: str, *args: Any) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD_SIZE)
    try:
        result = _train(rank, *args)
        if rank == 0:
            torch.save(result, out)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=504)
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    with tempfile.TemporaryDirectory() as folder:
        for label, options, momentum in CONFIGURATIONS:
            init, out = f"file://{Path(folder) / label}.init", str(Path(folder) / f"{label}.pt")
            run_args = (init, out, options, momentum, args.lr, args.steps)
            mp.spawn(_rank, args=run_args, nprocs=WORLD_SIZE)
            result = torch.load(out, weights_only=True)
            ratios = " ".join(f"{n} {r:.2f}" for n, r in result["ratios"].items())
            lag = " ".join(f"{r / (1 - momentum):.1f}" for r in result["ratios"].values())
            print(f"{label:<17} ||e||/||g||: {ratios}  lag: {lag}  loss {result['loss']:.4f}")


if __name__ == "__main__":
    main()
