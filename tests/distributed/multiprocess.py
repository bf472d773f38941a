"""Run a function on several gloo ranks (CPU processes) and collect what each returns.

``run_on_ranks(fn, args, tmp_path)`` spawns ``world_size`` processes; each initializes a
gloo process group from a fresh ``file://`` store, calls ``fn(rank, *args)``, saves the
result with ``torch.save`` (so results are tensors, numbers, strings, lists and dicts),
passes a barrier and tears the group down (without the barrier, teardown crashed in ~2 of
10 runs). ``fn`` must be a module-level function, importable by the children.
"""

from __future__ import annotations

import gc
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def run_on_ranks(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    tmp_path: Path,
    *,
    world_size: int = 2,
    timeout: float = 120.0,
) -> list[Any]:
    """``[fn(0, *args), ..., fn(world_size - 1, *args)]``, each run on its own rank."""
    init_method = f"file://{tmp_path / 'store'}"
    context = mp.spawn(
        _run_rank,
        args=(fn, args, world_size, init_method, str(tmp_path)),
        nprocs=world_size,
        join=False,
    )
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1.0):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            raise TimeoutError(f"{fn.__name__} did not finish on {world_size} ranks in {timeout} s")
    return [
        torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(world_size)
    ]


def _run_rank(
    rank: int,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    world_size: int,
    init_method: str,
    out_dir: str,
) -> None:
    # The suite's conftest does not run in the children: same one thread, same warnings.
    torch.set_num_threads(1)
    warnings.simplefilter("error")
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world_size)
    try:
        result = fn(rank, *args)
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
        dist.barrier()
    finally:
        # As train_rank does: let fn's DDP models go before the group, so gloo's threads
        # end here, not at interpreter exit, where one still holding work aborts the
        # process (SIGABRT; it failed CI's module fixture in tests/distributed/test_hooks.py).
        gc.collect()
        dist.destroy_process_group()
