"""How far apart the LR range test's suggestions land from seed to seed (the issue's "within 3x").

Ten cases: an MLP 64x2 on digits, spirals, moons, circles and MNIST-1D, with SGD (lr 0.1,
momentum 0.9) and Adam (lr 1e-3), ``lr_find`` with its defaults. Two protocols, each
printed as the max/min ratio of the suggestions and their range:

- **repeated sweeps of one model** (the issue's case): for each init in ``--inits``, the
  same initial weights swept with every ``lr_find`` seed in ``--seeds``; the worst init;
- **everything varied**: for each seed in ``--varied``, init and sweep seed both equal to
  it, in sets of 32 seeds; the worst set.

Each step of the default grid is a factor 1.205, so the ratios come in its powers (2.54x
is five steps, 3.05x six). One thread.

Run: .venv/bin/python benchmarks/lr_finder_spread.py [--inits 0 4] [--seeds 0 16]
     [--varied 0 96] [--cases digits/sgd spirals/adam ...]
"""

from __future__ import annotations

import argparse

import torch

from gradwise.data import load_dataset
from gradwise.lr_finder import lr_find
from gradwise.models import build_model

CASES = [f"{name}/{kind}" for name in ("digits", "spirals", "moons", "circles", "mnist1d")
         for kind in ("sgd", "adam")]  # fmt: skip
SET_SIZE = 32


def suggestion(name: str, kind: str, init: int, seed: int) -> float:
    data = load_dataset(name, seed=0)
    torch.manual_seed(init)
    model = build_model("mlp", data.input_shape, data.output_size, width=64, depth=2)
    optimizer = (
        torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        if kind == "sgd"
        else torch.optim.Adam(model.parameters(), lr=1e-3)
    )
    return lr_find(model, optimizer, data, seed=seed).suggestion


def spread(values: list[float]) -> tuple[float, str]:
    return max(values) / min(values), f"{min(values):.2g} to {max(values):.2g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inits", type=int, nargs=2, default=(0, 4), metavar=("FROM", "TO"))
    parser.add_argument("--seeds", type=int, nargs=2, default=(0, 16), metavar=("FROM", "TO"))
    parser.add_argument("--varied", type=int, nargs=2, default=(0, 96), metavar=("FROM", "TO"))
    parser.add_argument("--cases", nargs="+", default=CASES, choices=CASES)
    args = parser.parse_args()
    torch.set_num_threads(1)
    inits, seeds, varied = range(*args.inits), range(*args.seeds), range(*args.varied)
    print(
        f"torch {torch.__version__}, 1 thread; one model: inits {inits.start}-{inits.stop - 1} "
        f"x seeds {seeds.start}-{seeds.stop - 1}; varied: seeds {varied.start}-"
        f"{varied.stop - 1} in sets of {SET_SIZE}"
    )
    print(f"{'case':14s} {'one model (worst init)':>30s} {'varied (worst set)':>30s}")
    for case in args.cases:
        name, kind = case.split("/")
        per_init = [spread([suggestion(name, kind, i, s) for s in seeds]) for i in inits]
        runs = [suggestion(name, kind, s, s) for s in varied]
        per_set = [spread(runs[a : a + SET_SIZE]) for a in range(0, len(runs), SET_SIZE)]
        one_model, any_seed = max(per_init), max(per_set)
        print(
            f"{case:14s} {one_model[0]:8.2f}x ({one_model[1]:>16s}) "
            f"{any_seed[0]:8.2f}x ({any_seed[1]:>16s})",
            flush=True,
        )


if __name__ == "__main__":
    main()
