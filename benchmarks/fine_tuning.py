"""Fine-tuning versus training from scratch: optimizer steps to a target accuracy.

For each pair (source dataset -> target dataset) the script trains one source run with
``gradwise.train.train``, then, for every seed, trains on the target three ways with the
same config, data order and step budget:

- **scratch**: the model's own He-normal initialization;
- **warm**: ``warm_start: {source: <source run>}`` (every layer whose name and shape
  match starts from the source run's last checkpoint; the read-out is new);
- **shuffled** (control): the same warm start from a copy of the source weights with the
  entries of every tensor randomly permuted, which keeps each tensor's scale and value
  distribution but destroys what was learnt. What warm gains over shuffled comes from the
  learnt features; what shuffled gains over scratch comes from the weights' scale alone.

Every ``--every`` steps the validation accuracy is measured; a run's number is the first
step at which it reaches ``--target`` (the budget + 1 when it never does). The ratio is
(mean scratch steps) / (mean warm steps). One thread, CPU.

Pairs (built-in datasets, offline):

- ``spirals->moons`` and ``spirals->circles``: an MLP (2 hidden layers of 64, ReLU) on 2-D
  points; the source has 3 classes, the targets 2, so the read-out is new.
- ``mnist5k->digits``: a cnn2d (2 conv blocks of 32 channels); its conv kernels and batch
  norms do not depend on the image size (28x28 versus 8x8), the read-out does.

Run: .venv/bin/python benchmarks/fine_tuning.py [--seeds 5] [--pairs spirals->moons ...]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch

from gradwise.config import load_config
from gradwise.train import Callback, TrainState, make_trainer, prepare_run, train

PAIRS: dict[str, dict[str, Any]] = {
    "spirals->moons": {
        "source": "spirals",
        "target": "moons",
        "model": ["model.name=mlp", "model.width=64", "model.depth=2", "model.norm=none"],
        "source_epochs": 30,
        "batch_size": 16,
        "steps": 300,
    },
    "spirals->circles": {
        "source": "spirals",
        "target": "circles",
        "model": ["model.name=mlp", "model.width=64", "model.depth=2", "model.norm=none"],
        "source_epochs": 30,
        "batch_size": 16,
        "steps": 300,
    },
    "mnist5k->digits": {
        "source": "mnist5k",
        "target": "digits",
        "model": [
            "model.name=cnn2d",
            "model.width=32",
            "data.preprocess=[{name: standardize, per: channel}]",
        ],
        "source_epochs": 3,
        "batch_size": 32,
        "steps": 300,
    },
}


class StepsToTarget(Callback):
    """Stops the run at the first multiple of ``every`` steps with accuracy >= ``target``."""

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor, target: float, every: int):
        self.inputs, self.labels, self.target, self.every = inputs, labels, target, every
        self.reached: int | None = None

    def on_step_end(self, state: TrainState) -> None:
        if state.step % self.every:
            return
        model = state.model
        model.eval()
        with torch.no_grad():
            accuracy = (model(self.inputs).argmax(dim=1) == self.labels).float().mean().item()
        model.train()
        if accuracy >= self.target:
            self.reached = state.step
            state.request_stop(f"reached {self.target}")


def shuffled_copy(run: Path, destination: Path, seed: int) -> Path:
    """The source run's last weights with each tensor's entries permuted (the control)."""
    from gradwise.train import load_checkpoint

    state = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    generator = torch.Generator().manual_seed(seed)
    shuffled = {
        name: tensor.flatten()[torch.randperm(tensor.numel(), generator=generator)].view_as(tensor)
        if tensor.is_floating_point()
        else tensor
        for name, tensor in state.items()
    }
    torch.save(shuffled, destination)
    return destination


def steps_to_target(overrides: list[str], target: float, every: int, budget: int) -> int:
    prepared = prepare_run(load_config(overrides=overrides))
    validation = prepared.data.validation
    assert validation is not None  # noqa: S101 - the built-ins have validation splits
    callback = StepsToTarget(validation.inputs, validation.targets, target, every)
    make_trainer(prepared, None, progress=False, callbacks=[callback]).fit()
    return callback.reached if callback.reached is not None else budget + 1


def run_pair(name: str, seeds: int, target: float, every: int, root: Path) -> dict[str, Any]:
    pair = PAIRS[name]
    common = [*pair["model"], "schedule=null", "monitor=null", "optimizer.lr=0.003"]
    common += [f"data.batch_size={pair['batch_size']}", f"runs_dir={root}", "log_every=1000"]
    source = train(
        load_config(
            overrides=[
                *common,
                f"data.dataset={pair['source']}",
                f"epochs={pair['source_epochs']}",
                f"name={name.replace('>', '')}",
            ]
        ),
        progress=False,
    )
    assert source.run is not None  # noqa: S101
    budget = pair["steps"]
    arms: dict[str, list[int]] = {"scratch": [], "warm": [], "shuffled": []}
    for seed in range(seeds):
        base = [*common, f"data.dataset={pair['target']}", f"steps={budget}", f"seed={seed}"]
        control = shuffled_copy(source.run.path, root / f"shuffled-{seed}.pt", seed)
        sources = {"scratch": None, "warm": source.run.path, "shuffled": control}
        for arm, path in sources.items():
            warm = [] if path is None else [f"warm_start={{source: '{path}'}}"]
            arms[arm].append(steps_to_target([*base, *warm], target, every, budget))
    return {"source_metrics": source.metrics, **arms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--pairs", nargs="*", default=list(PAIRS), choices=list(PAIRS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"steps to {args.target:.0%} validation accuracy (checked every {args.every} steps)")
    print(f"seeds 0..{args.seeds - 1}; torch {torch.__version__}, 1 thread")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.pairs:
            result = run_pair(name, args.seeds, args.target, args.every, Path(folder))
            source_accuracy = result["source_metrics"].get("val_accuracy", float("nan"))
            print(f"\n{name} (source val accuracy {source_accuracy:.3f})")
            means = {}
            for arm in ("scratch", "warm", "shuffled"):
                means[arm] = statistics.mean(result[arm])
                print(f"  {arm:<9} {result[arm]}  mean {means[arm]:.1f}")
            print(
                f"  ratio scratch/warm {means['scratch'] / means['warm']:.2f}, "
                f"shuffled/warm {means['shuffled'] / means['warm']:.2f}"
            )


if __name__ == "__main__":
    main()
