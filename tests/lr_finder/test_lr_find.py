"""lr_find on real models: state restored bitwise, every group swept, divergence, noise."""

from __future__ import annotations

import argparse
import math
import random
import re
from typing import Any

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from gradwise import optim
from gradwise.cli._lr_find import add_parser
from gradwise.data import Batches, Dataset, load_dataset
from gradwise.lr_finder import exponential_lrs, lr_find
from gradwise.models import build_model
from gradwise.optim import next_step_lr
from gradwise.prune import attach_masks
from gradwise.regularize import MaxNorm
from gradwise.schedules import ReduceOnPlateau


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3)
    )


def _data(size: int = 256) -> Dataset:
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(size, 4, generator=generator)
    return Dataset(inputs, (inputs[:, 0] > 0).long() + (inputs[:, 1] > 0).long())


def _snapshot(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "grads": [(p.grad, None if p.grad is None else p.grad.clone()) for p in model.parameters()],
        "modes": [m.training for m in model.modules()],
        "optimizer": _flatten(optimizer.state_dict()),
        "rng": torch.get_rng_state(),
    }


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}/{key}"))
        return out
    if isinstance(value, list | tuple):
        out = {}
        for i, item in enumerate(value):
            out.update(_flatten(item, f"{prefix}/{i}"))
        return out
    return {prefix: value.clone() if isinstance(value, torch.Tensor) else value}


def _assert_same(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert before["state"].keys() == after["state"].keys()
    for key, value in before["state"].items():
        assert torch.equal(value, after["state"][key]), key
    for (grad, saved), (grad_after, _) in zip(before["grads"], after["grads"], strict=True):
        assert grad_after is grad  # the same tensor object ...
        if saved is not None:
            assert torch.equal(grad_after, saved)  # ... with the same values
    assert before["modes"] == after["modes"]
    assert before["optimizer"].keys() == after["optimizer"].keys()
    for key, value in before["optimizer"].items():
        other = after["optimizer"][key]
        assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other
    assert torch.equal(before["rng"], after["rng"])


@pytest.mark.parametrize("kind", ["torch_adam", "gradwise_adamw", "gradwise_chain"])
def test_model_optimizer_grads_modes_and_rng_are_restored_bitwise(kind: str) -> None:
    model = _net()
    if kind == "torch_adam":
        optimizer: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    elif kind == "gradwise_adamw":
        optimizer = optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    else:
        optimizer = optim.Optimizer(
            model.parameters(),
            lambda lr: optim.chain(optim.scale_by_momentum(0.9), optim.scale_by_learning_rate(lr)),
            lr=0.05,
        )
    data = _data()
    # A used optimizer (state to restore), an existing .grad, and a mixed train/eval mode.
    loss = nn.functional.cross_entropy(model(data.inputs[:32]), data.targets[:32])
    loss.backward()
    optimizer.step()
    model.eval()
    model[1].train()
    torch.manual_seed(123)
    before = _snapshot(model, optimizer)
    result = lr_find(model, optimizer, data, start_lr=1e-4, end_lr=1e3, num_steps=40, batch_size=32)
    assert len(result.losses) >= 10
    _assert_same(before, _snapshot(model, optimizer))


def test_every_param_group_gets_each_lr_of_the_grid_and_loss_is_recorded_before_the_step() -> None:
    model = _net()
    seen: list[list[float]] = []

    class RecordingSGD(torch.optim.SGD):
        def step(self, closure: Any = None) -> Any:
            seen.append([float(group["lr"]) for group in self.param_groups])
            return super().step(closure)

    optimizer = RecordingSGD(
        [{"params": model[0].parameters(), "lr": 0.5}, {"params": model[4].parameters()}],
        lr=0.1,
    )
    batches = [(_data().inputs[:16], _data().targets[:16])] * 3  # re-iterated when exhausted
    result = lr_find(model, optimizer, batches, start_lr=1e-5, end_lr=1e-3, num_steps=7,
                     diverge_factor=1e9, num_sweeps=1)  # fmt: skip
    grid = exponential_lrs(1e-5, 1e-3, 7)
    assert seen == [[lr, lr] for lr in grid]
    assert list(result.lrs) == grid
    assert [g["lr"] for g in optimizer.param_groups] == [0.5, 0.1]
    # lr_find trains in train mode (batch statistics): compare with a train-mode forward.
    model.train()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        expected = nn.functional.cross_entropy(model(batches[0][0]), batches[0][1]).item()
    assert result.losses[0] == pytest.approx(expected, rel=1e-6)


def test_the_sweep_stops_when_the_smoothed_loss_passes_four_times_the_best() -> None:
    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    result = lr_find(model, optimizer, _data(), start_lr=1e-3, end_lr=1e6, num_steps=60,
                     smoothing=0.5, batch_size=32, num_sweeps=1)  # fmt: skip
    assert result.diverged_at is not None
    assert len(result.losses) == result.diverged_at + 1 < 60
    stop = result.smoothed[-1]
    assert not stop < 4 * min(result.smoothed)  # NaN or above the bound
    assert all(s <= 4 * min(result.smoothed[: i + 1]) for i, s in enumerate(result.smoothed[:-1]))


def test_the_sweeps_are_averaged_up_to_the_first_to_diverge() -> None:
    # The oracle: each sweep run alone with its seed; the mean over the steps all reached.
    data = _data()
    options: dict[str, Any] = {
        "start_lr": 1e-3, "end_lr": 1e6, "num_steps": 60, "smoothing": 0.5, "batch_size": 32
    }  # fmt: skip
    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    result = lr_find(model, optimizer, data, seed=7, **options)
    assert result.seeds[0] == 7
    assert len(set(result.seeds)) == 5
    alone = [
        lr_find(model, optimizer, data, seed=seed, num_sweeps=1, **options).losses
        for seed in result.seeds
    ]
    assert result.sweeps == tuple(alone)
    reached = min(len(losses) for losses in alone)
    assert len({len(losses) for losses in alone}) > 1  # the sweeps stop at different steps
    expected = [sum(losses[step] for losses in alone) / 5 for step in range(reached)]
    assert result.losses == pytest.approx(expected, rel=1e-12)
    assert result.diverged_at == reached - 1  # where the first sweep to diverge stopped
    assert result.rose_at is None or result.rose_at < result.diverged_at


def test_a_batches_object_that_shuffles_gets_another_order_in_each_sweep() -> None:
    data = _data()
    batches = Batches(data, batch_size=16, seed=3)
    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    result = lr_find(model, optimizer, batches, start_lr=1e-5, end_lr=1e-3, num_steps=10,
                     diverge_factor=1e9)  # fmt: skip
    first, second, *_ = result.sweeps
    assert first == lr_find(model, optimizer, batches, start_lr=1e-5, end_lr=1e-3,
                            num_steps=10, diverge_factor=1e9, num_sweeps=1).losses  # fmt: skip
    assert first != second
    reseeded = Batches(data, batch_size=16, seed=result.seeds[1])
    assert second == lr_find(model, optimizer, reseeded, start_lr=1e-5, end_lr=1e-3,
                             num_steps=10, diverge_factor=1e9, num_sweeps=1,
                             seed=result.seeds[1]).losses  # fmt: skip


def test_every_sweep_keeps_the_batches_min_last_batch_size() -> None:
    # 33 = 2 x 16 + 1: the batch-norm model cannot train on the 1-sample last batch, which
    # the Batches drops; the second sweep's reseeded Batches must drop it too.
    batches = Batches(_data(33), batch_size=16, min_last_batch_size=2, seed=3)
    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    result = lr_find(model, optimizer, batches, start_lr=1e-5, end_lr=1e-3, num_steps=6,
                     diverge_factor=1e9, num_sweeps=2)  # fmt: skip
    assert [len(losses) for losses in result.sweeps] == [6, 6]


def test_a_one_shot_iterator_ends_the_sweep_early() -> None:
    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = iter([(_data().inputs[:8], _data().targets[:8])] * 5)
    result = lr_find(model, optimizer, batches, start_lr=1e-5, end_lr=1e-3, num_steps=20)
    assert len(result.losses) == 5
    assert result.planned_steps == 20


def _suggestions(name: str, make: str, seeds: range, init: int | None = None) -> list[float]:
    """One suggestion per seed; the init follows the seed unless ``init`` fixes it."""
    data = load_dataset(name, seed=0)
    out = []
    for seed in seeds:
        torch.manual_seed(seed if init is None else init)
        model = build_model("mlp", data.input_shape, data.output_size, width=64, depth=2)
        if make == "sgd":
            optimizer: torch.optim.Optimizer = torch.optim.SGD(
                model.parameters(), lr=0.1, momentum=0.9
            )
        else:
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        out.append(lr_find(model, optimizer, data, seed=seed).suggestion)
    return out


@pytest.mark.parametrize(
    ("name", "optimizer"),
    [
        ("digits", "sgd"), ("digits", "adam"), ("spirals", "sgd"), ("spirals", "adam"),
        ("moons", "sgd"),  # 50x apart when the steepest fall anywhere was taken
        ("moons", "adam"), ("circles", "adam"), ("mnist1d", "sgd"), ("mnist1d", "adam"),
        ("circles", "sgd"),  # 13x apart over 32 seeds with one sweep read past its bump
    ],
)  # fmt: skip
def test_suggestions_from_five_seeds_lie_within_3x(name: str, optimizer: str) -> None:
    suggestions = _suggestions(name, optimizer, range(5))
    assert max(suggestions) / min(suggestions) <= 3.0, suggestions


def test_repeated_sweeps_of_one_model_lie_within_3x() -> None:
    # The case: one model, lr_find with 16 seeds. Spirals with Adam from init 2
    # was the one pair of case and init over 3x (3.05x, seed 3 at 0.031 against
    # 0.010-0.015) when the steepest point was the middle of its stretch; the centre of
    # the fall puts it within 2.54x (docs/lr_finder.md).
    suggestions = _suggestions("spirals", "adam", range(16), init=2)
    assert max(suggestions) / min(suggestions) <= 3.0, suggestions


def test_plot_is_a_png_and_the_table_marks_the_suggestion() -> None:
    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    result = lr_find(model, optimizer, _data(), start_lr=1e-4, end_lr=1e3, num_steps=40)
    png = result.plot_png()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) > 5000
    table = result.to_table().to_dict()
    assert [row[0] for row in table["rows"]] == [
        "steepest descent", "min loss / 10", "min loss (reference)"
    ]  # fmt: skip
    marked = [values[1] for values in table["values"] if values[3] is True]
    assert marked == [result.suggestion]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start_lr": 0.0}, "The 'start_lr' parameter of lr_find must be a finite float > 0. Got 0.0 instead."),
        ({"start_lr": float("inf")}, "The 'start_lr' parameter of lr_find must be a finite float > 0. Got inf instead."),
        ({"end_lr": 1e-8}, "The 'end_lr' parameter of lr_find must be a finite float > start_lr (1e-07). Got 1e-08 instead."),
        ({"end_lr": float("inf")}, "The 'end_lr' parameter of lr_find must be a finite float > start_lr (1e-07). Got inf instead."),
        ({"rise_factor": float("inf")}, "The 'rise_factor' parameter of lr_find must be a finite float > 1. Got inf instead."),
        ({"loss_fn": "l2"}, "The 'loss_fn' parameter of lr_find must be one of 'cross_entropy'"),
        ({"num_steps": 2}, "The 'num_steps' parameter of lr_find must be an int >= 3"),
        ({"seed": -1}, "The 'seed' parameter of lr_find must be an int in [0, 4294967295]"),
        ({"num_sweeps": 0}, "The 'num_sweeps' parameter of lr_find must be an int >= 1. Got 0 instead."),
        ({"rise_factor": 1.0}, "The 'rise_factor' parameter of lr_find must be a finite float > 1"),
    ],
)  # fmt: skip
def test_bad_arguments_raise_the_standard_error(kwargs: dict[str, Any], message: str) -> None:
    model = _net()
    with pytest.raises(ValueError, match=re.escape(message)):
        lr_find(model, torch.optim.SGD(model.parameters(), lr=0.1), _data(), **kwargs)


def test_batches_that_are_not_pairs_raise_a_type_error() -> None:
    model = _net()
    with pytest.raises(TypeError, match="must yield \\(inputs, targets\\) pairs"):
        lr_find(model, torch.optim.SGD(model.parameters(), lr=0.1), [torch.zeros(2, 4)])


def _cli(argv: list[str]) -> int:
    from gradwise.config import ConfigError

    parser = argparse.ArgumentParser(prog="gradwise")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except ConfigError as error:
        raise SystemExit(str(error)) from None


def test_cli_prints_the_table_and_suggestion_and_writes_the_plot(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(
        "seed: 0\ndata:\n  dataset: spirals\n  batch_size: 32\nmodel:\n  name: mlp\n"
        "  width: 32\n  depth: 2\noptimizer:\n  name: SGD\n  lr: 0.1\n  momentum: 0.9\n"
        "schedule:\n  name: cosine\n  warmup: 10\n"
    )
    out = tmp_path / "plot.png"
    code = _cli(["lr-find", str(config), "--start", "1e-4", "--end", "100", "--steps", "50",
                 "--out", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    assert "LR range test: " in printed
    assert "steepest descent" in printed
    suggested = float(re.search(r"suggested lr: (\S+)", printed).group(1))  # type: ignore[union-attr]
    assert 1e-4 < suggested < 100
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_cli_turns_a_bad_sweep_setting_into_a_config_error(tmp_path: Any) -> None:
    message = (
        "The '--end' parameter of gradwise lr-find must be a finite float > 1. Got 0.1 instead."
    )
    with pytest.raises(SystemExit, match=re.escape(message)):
        _cli(["lr-find", "--set", "data.dataset=spirals", "--start", "1", "--end", "0.1",
              "--out", str(tmp_path / "x.png")])  # fmt: skip
    message = "The '--sweeps' parameter of gradwise lr-find must be an int >= 1. Got 0 instead."
    with pytest.raises(SystemExit, match=re.escape(message)):
        _cli(["lr-find", "--set", "data.dataset=spirals", "--sweeps", "0",
              "--out", str(tmp_path / "x.png")])  # fmt: skip


SPIRALS_MLP = ["--set", "data.dataset=spirals", "--set", "model.name=mlp"]


@pytest.mark.parametrize(
    ("out", "what", "fix"),
    [("x.txt", "its suffix is '.txt'", "x.png"), ("plot", "it has no suffix", "plot.png"),
     ("x.jpg", "its suffix is '.jpg'", "x.png"), ("x.", "it has no suffix", "x.png")],
)  # fmt: skip
def test_cli_refuses_an_out_that_is_not_a_png_before_the_sweep(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], out: str, what: str, fix: str
) -> None:
    # The plot is PNG bytes; --out x.txt wrote them under that name after the whole sweep.
    path = tmp_path / out
    message = (
        f"The '--out' option of gradwise lr-find must be a path ending in .png (the plot is "
        f"written as a PNG image). Got {str(path)!r} instead: {what}. Use e.g. "
        f"{str(tmp_path / fix)!r}."
    )
    with pytest.raises(SystemExit, match=re.escape(message)):
        _cli(["lr-find", *SPIRALS_MLP, "--out", str(path)])
    assert capsys.readouterr().out == ""  # no sweep: its table is printed first
    assert not path.exists()
    upper = tmp_path / "PLOT.PNG"
    assert _cli(["lr-find", *SPIRALS_MLP, "--steps", "5", "--sweeps", "1",
                 "--out", str(upper)]) == 0  # fmt: skip
    assert upper.read_bytes()[:4] == b"\x89PNG"


def _linear_problem() -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(0)
    inputs = torch.randn(16, 4)
    return nn.Linear(4, 3), [(inputs, (inputs[:, 0] > 0).long())]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda params: optim.Optimizer(
                params, optim.chain(optim.scale_by_adam(), optim.scale_by_learning_rate(1e-3))
            ),
            "The 'optimizer' parameter of lr_find must have an 'lr' in every param group for "
            "the sweep to set. Got an Optimizer whose param group 0 has none instead.",
        ),
        (
            lambda params: optim.Newton(params),
            "The 'optimizer' parameter of lr_find must be a first-order optimizer whose step "
            "closure calls backward(). Got Newton instead",
        ),
    ],
)
def test_an_optimizer_the_sweep_cannot_drive_is_refused_up_front(make: Any, message: str) -> None:
    model, batches = _linear_problem()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=re.escape(message)):
        lr_find(model, make(model.parameters()), batches, num_steps=20)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_an_optimizer_over_none_of_the_models_parameters_is_refused_up_front() -> None:
    # QA: an optimizer over another model's parameters swept a model that never moved and
    # suggested 1.2e-08, the minibatches' noise read as a fall.
    model, batches = _linear_problem()
    other = nn.Linear(4, 3)
    optimizer = torch.optim.SGD(other.parameters(), lr=0.1)
    before = other.weight.detach().clone()
    with pytest.raises(ValueError, match=re.escape(
        "The 'optimizer' parameter of lr_find must hold some of the model's trainable "
        "parameters. Got an optimizer (SGD) that steps none of them instead (it holds 2 other "
        "tensors)"
    )):  # fmt: skip
        lr_find(model, optimizer, batches, num_steps=20, num_sweeps=1)
    assert torch.equal(other.weight, before)  # no sweep ran
    assert other.weight.grad is None
    # A model with no trainable parameter: no optimizer can step it.
    model.requires_grad_(False)
    with pytest.raises(ValueError, match=r"^The 'model' parameter of lr_find must have a train"):
        lr_find(model, torch.optim.SGD(model.parameters(), lr=0.1), batches, num_steps=20)


def test_an_optimizer_over_some_of_the_models_parameters_or_more_is_swept() -> None:
    # Fine-tuning the head only, and a learnable temperature of the loss with the model.
    model, loss = _net(), _TemperedLoss()
    head = torch.optim.SGD(model[-1].parameters(), lr=0.1)
    result = lr_find(model, head, _data(), start_lr=1e-3, end_lr=1e2, num_steps=20, num_sweeps=1)
    assert len(result.losses) >= 10
    both = torch.optim.SGD([*model.parameters(), *loss.parameters()], lr=0.1)
    result = lr_find(model, both, _data(), loss_fn=loss, start_lr=1e-3, end_lr=1e2,
                     num_steps=20, num_sweeps=1)  # fmt: skip
    assert len(result.losses) >= 10


def test_a_gradwise_chain_built_by_a_factory_is_swept() -> None:
    model, batches = _linear_problem()
    optimizer = optim.Optimizer(
        model.parameters(),
        lambda lr: optim.chain(optim.scale_by_adam(), optim.scale_by_learning_rate(lr)),
        lr=1e-3,
    )
    result = lr_find(model, optimizer, batches, num_steps=20, num_sweeps=1)
    assert len(result.losses) >= 10
    assert optimizer.param_groups[0]["lr"] == 1e-3


def test_a_negative_loss_does_not_stop_the_sweep_at_its_first_step() -> None:
    # The oracle: the same sweep on the unshifted loss (a constant shift changes no
    # gradient, so both sweeps train identically up to where either stops).
    def sweep(shift: float) -> Any:
        model, batches = _linear_problem()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        return lr_find(model, optimizer, batches, num_sweeps=1, num_steps=50,
                       loss_fn=lambda o, t: nn.functional.cross_entropy(o, t) - shift)  # fmt: skip

    shifted, plain = sweep(5.0), sweep(0.0)
    assert shifted.diverged_at is None or shifted.diverged_at >= 10
    steps = min(len(shifted.losses), len(plain.losses))
    assert steps >= 10
    assert shifted.losses[:steps] == pytest.approx([v - 5.0 for v in plain.losses[:steps]])
    assert shifted.suggestion > 1e-7  # not the min-loss/10 of a one-step curve


class _RunningMean(nn.Module):
    """Centres its inputs by a running mean kept in buffers that forward reassigns (not
    updated in place, as BatchNorm does): a common way to write such state."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.register_buffer("seen", torch.zeros(()))
        self.register_buffer("mean", torch.zeros(4))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.seen = self.seen + len(inputs)
            self.mean = 0.9 * self.mean + 0.1 * inputs.mean(0).detach()
        return self.linear(inputs - self.mean)


def test_buffers_that_forward_reassigns_are_restored_before_each_sweep_and_after() -> None:
    # The oracle: with one fixed batch and no dropout, every sweep from the same state
    # sees the same losses; and the model's state_dict after is the one before.
    torch.manual_seed(0)
    model = _RunningMean()
    buffers = dict(model.named_buffers())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [(torch.randn(16, 4) + 3.0, torch.randint(0, 3, (16,)))]
    result = lr_find(model, optimizer, batches, start_lr=1e-4, end_lr=1e-1, num_steps=20,
                     num_sweeps=2)  # fmt: skip
    assert result.sweeps[0] == result.sweeps[1]
    after = model.state_dict()
    assert all(torch.equal(value, after[key]) for key, value in before.items())
    assert all(tensor is buffers[name] for name, tensor in model.named_buffers())


def test_a_tensor_lr_is_restored_in_the_same_tensor() -> None:
    # torch optimizers take lr as a Tensor (for capturable and compiled steps, and a
    # scheduler or a captured graph holds that tensor): the sweep must not leave its last
    # lr in it, nor swap it for a copy.
    model = _net()
    lr = torch.tensor(0.01)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    lr_find(model, optimizer, _data(), start_lr=1e-4, end_lr=1e2, num_steps=30, num_sweeps=2)
    assert optimizer.param_groups[0]["lr"] is lr
    assert torch.equal(lr, torch.tensor(0.01))


def test_the_sweep_queues_no_seed_for_a_cuda_generator_it_does_not_restore(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # torch.manual_seed also seeds CUDA, lazily when CUDA is not initialized yet: the seed
    # is queued and applied at the first CUDA call, after the sweep, which fork_rng (over
    # the CUDA devices in use: none) does not undo. A CPU model's sweep must leave CUDA's
    # random numbers as they were: no CUDA seeding at all.
    if torch.cuda.is_initialized():
        pytest.skip("CUDA is initialized: its generators are forked and restored")
    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    seeded: list[int] = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", seeded.append)
    monkeypatch.setattr(torch.cuda, "manual_seed", seeded.append)
    result = lr_find(model, optimizer, _data(), start_lr=1e-4, end_lr=1e2, num_steps=20, seed=3)
    assert seeded == []
    # The CPU generator is still seeded per sweep: the same seed gives the same sweep.
    again = lr_find(model, optimizer, _data(), start_lr=1e-4, end_lr=1e2, num_steps=20, seed=3)
    assert again.sweeps == result.sweeps


def test_a_loss_that_is_not_finite_from_the_first_step_gives_a_result_that_renders() -> None:
    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    inputs = _data().inputs[:32].clone()
    inputs[0, 0] = math.nan  # one bad sample: every loss of the batch is NaN
    result = lr_find(model, optimizer, [(inputs, _data().targets[:32])], num_steps=20)
    assert result.diverged_at == 0
    assert len(result.losses) == 1
    assert "stopped at step 0" in result.to_table().render_text()
    assert "not finite" in result.reasoning


def test_a_schedule_and_group_dicts_the_caller_holds_still_drive_the_optimizer() -> None:
    # load_state_dict puts copies into new group dicts: a ReduceOnPlateau the caller
    # observes, or a group dict kept by other code, then no longer reached the optimizer.
    # The oracle: ReduceOnPlateau's rule by hand, patience 0 and factor 0.1, two worse
    # metrics after the first cut the lr twice: 0.1 -> 0.001.
    model = _net()
    plateau = ReduceOnPlateau(0.1, patience=0, factor=0.1)
    optimizer = optim.SGD(model.parameters(), lr=plateau, momentum=0.9)
    groups, group = optimizer.param_groups, optimizer.param_groups[0]
    lr_find(model, optimizer, _data(), start_lr=1e-4, end_lr=1e2, num_steps=20, num_sweeps=2)
    assert optimizer.param_groups is groups
    assert optimizer.param_groups[0] is group
    assert group["lr"] is plateau
    for metric in (1.0, 2.0, 3.0):
        plateau.observe(metric)
    assert next_step_lr(optimizer) == pytest.approx(0.001)


class _TemperedLoss(nn.Module):
    """Cross-entropy of logits divided by a learnable temperature (trained with the model)."""

    def __init__(self) -> None:
        super().__init__()
        self.temperature = nn.Parameter(torch.tensor(2.0))

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(outputs / self.temperature, targets)


def test_parameters_the_optimizer_holds_outside_the_model_are_restored() -> None:
    # The optimizer also trains the loss's temperature: the sweep moved it and left it
    # moved (only the model's tensors were put back).
    model, loss = _net(), _TemperedLoss()
    optimizer = torch.optim.SGD([*model.parameters(), *loss.parameters()], lr=0.1)
    loss(model(_data().inputs[:32]), _data().targets[:32]).backward()
    grad = loss.temperature.grad
    assert grad is not None
    saved_grad = grad.clone()
    lr_find(model, optimizer, _data(), loss_fn=loss, start_lr=1e-3, end_lr=1e2, num_steps=30,
            num_sweeps=2)  # fmt: skip
    assert torch.equal(loss.temperature.detach(), torch.tensor(2.0))
    assert loss.temperature.grad is grad
    assert torch.equal(grad, saved_grad)


@pytest.mark.parametrize(("size", "expected"), [(129, 64), (10, 10)])
def test_a_dataset_is_swept_in_full_batches(size: int, expected: int) -> None:
    # 129 samples at batch 64 left a 1-sample batch each epoch: BatchNorm raised
    # "Expected more than 1 value per channel when training", and a few samples' loss is a
    # spike for the stop rule. A dataset smaller than a batch is swept as one batch.
    model = _net()
    sizes: list[int] = []
    model.register_forward_pre_hook(lambda _, args: sizes.append(len(args[0])))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    result = lr_find(model, optimizer, _data(size), start_lr=1e-4, end_lr=1e-1, num_steps=12,
                     num_sweeps=2)  # fmt: skip
    assert len(result.losses) == 12
    assert set(sizes) == {expected}


@pytest.mark.parametrize(("start_lr", "end_lr"), [(1e-3, 1e-4), (0.01, 0.01)])
def test_an_end_lr_not_above_start_lr_names_both_and_the_fix(
    start_lr: float, end_lr: float
) -> None:
    # The message said "> 0.001" without saying that 0.001 was start_lr's value.
    model = _net()
    message = (
        f"The 'end_lr' parameter of lr_find must be a finite float > start_lr ({start_lr!r}). "
        f"Got {end_lr!r} instead. The sweep grows the lr from start_lr to end_lr: pass an "
        "end_lr above start_lr, or a smaller start_lr."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        lr_find(model, torch.optim.SGD(model.parameters(), lr=0.1), _data(),
                start_lr=start_lr, end_lr=end_lr)  # fmt: skip


def test_step_hooks_do_not_see_the_sweep_and_fire_again_afterwards() -> None:
    # An EMA kept by a step post-hook took in every throwaway step of the sweep (at up to
    # end_lr) and nothing put it back; a pre-hook counted steps that were not training.
    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9))
    optimizer.register_step_post_hook(lambda *_: ema.update_parameters(model))
    pre_calls: list[int] = []
    optimizer.register_step_pre_hook(lambda *_: pre_calls.append(1))
    data = _data()
    nn.functional.cross_entropy(model(data.inputs[:32]), data.targets[:32]).backward()
    optimizer.step()  # a real training step: the EMA holds one average
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    assert int(before["n_averaged"]) == 1
    assert pre_calls == [1]
    result = lr_find(model, optimizer, data, start_lr=1e-4, end_lr=1e2, num_steps=30,
                     num_sweeps=2)  # fmt: skip
    assert len(result.losses) > 3
    after = ema.state_dict()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
    assert pre_calls == [1]
    optimizer.step()  # the hooks are the caller's again
    assert pre_calls == [1, 1]
    assert int(ema.state_dict()["n_averaged"]) == 2


def test_gradwise_constraints_keep_acting_during_the_sweep() -> None:
    # MaxNorm.attach and attach_masks constrain through step hooks too, but they are part
    # of the model swept: every forward of the sweep sees capped rows and zeroed entries.
    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    first, last = model[0], model[4]
    MaxNorm(0.5).attach(optimizer, [first.weight])
    pruned = torch.zeros_like(last.weight, dtype=torch.bool)
    pruned[:, ::2] = True
    attach_masks(model, optimizer, {"4.weight": ~pruned})
    seen: list[tuple[float, float]] = []

    def record(module: nn.Module, args: Any) -> None:
        with torch.no_grad():
            norm, kept = first.weight.norm(dim=1).max(), last.weight[pruned].abs().max()
        seen.append((float(norm), float(kept)))

    model.register_forward_pre_hook(record)
    lr_find(model, optimizer, _data(), start_lr=1e-2, end_lr=1e2, num_steps=30, num_sweeps=1)
    assert len(seen) > 3
    assert max(norm for norm, _ in seen[1:]) <= 0.5 * (1 + 1e-6)  # float32 rounding
    assert max(value for _, value in seen) == 0.0


def test_global_step_hooks_still_fire_during_the_sweep() -> None:
    # torch's global hooks are process-wide (every optimizer, every thread): documented as
    # left on, unlike the optimizer's own hooks.
    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    calls: list[int] = []
    handle = register_optimizer_step_post_hook(
        lambda stepped, *_: calls.append(1) if stepped is optimizer else None
    )
    try:
        result = lr_find(model, optimizer, _data(), start_lr=1e-4, end_lr=1e-1, num_steps=12,
                         num_sweeps=1)  # fmt: skip
    finally:
        handle.remove()
    assert len(calls) == len(result.losses) == 12


def test_an_lr_scheduler_still_warns_when_stepped_before_the_optimizer() -> None:
    # The sweep's steps set torch's _opt_called flag and left it set, which silenced the
    # warning for a scheduler.step() before the first real optimizer.step().
    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
    lr_find(model, optimizer, _data(), start_lr=1e-4, end_lr=1e-1, num_steps=12, num_sweeps=1)
    assert not getattr(optimizer, "_opt_called", False)
    with pytest.warns(
        UserWarning, match=re.escape("`lr_scheduler.step()` before `optimizer.step()`")
    ):
        scheduler.step()


def test_an_optimizer_stepped_before_keeps_its_opt_called_flag() -> None:
    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
    nn.functional.cross_entropy(model(_data().inputs[:32]), _data().targets[:32]).backward()
    optimizer.step()
    lr_find(model, optimizer, _data(), start_lr=1e-4, end_lr=1e-1, num_steps=12, num_sweeps=1)
    assert optimizer._opt_called is True  # type: ignore[attr-defined]
    scheduler.step()  # no warning: pytest turns one into an error


def _smoothed_as_written(losses: list[float], beta: float) -> list[float]:
    """smooth_losses's docstring formula: a_i = beta a_(i-1) + (1 - beta) l_i, s_i = a_i / (1 - beta^(i+1))."""
    average, smoothed = 0.0, []
    for step, loss in enumerate(losses):
        average = beta * average + (1 - beta) * loss
        smoothed.append(average / (1 - beta ** (step + 1)))
    return smoothed


def _stops_as_written(losses: list[float], beta: float, factor: float) -> bool:
    """The stop rule of lr_find's docstring, on the whole history re-smoothed (the O(n^2) way)."""
    smoothed = _smoothed_as_written(losses, beta)
    last, best = smoothed[-1], min(smoothed)
    if not (math.isfinite(losses[-1]) and math.isfinite(last)):
        return True
    if best > 0:
        return last > factor * best
    return last - best > (factor - 1) * max(smoothed[0] - best, -best)


@pytest.mark.parametrize("shift", [0.0, -5.0, math.nan])
def test_a_long_sweep_stops_where_the_whole_history_re_smoothed_says(shift: float) -> None:
    # The sweep smooths step by step (O(1) a step); it must stop exactly where
    # re-smoothing every prefix would. A random walk that falls, then climbs; shifted
    # below 0 for the other branch of the rule, or with a NaN at step 700.
    rng = random.Random(7)
    level, scripted = 0.0, []
    for step in range(1200):
        level += rng.gauss(-0.01 if step < 600 else 0.02, 0.05)
        scripted.append(math.exp(level) + (0.0 if math.isnan(shift) else shift))
    if math.isnan(shift):
        scripted[700] = math.nan
    values = iter(scripted)

    def scripted_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return (outputs * 0.0).sum() + next(values)

    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    result = lr_find(model, optimizer, _data(), loss_fn=scripted_loss, start_lr=1e-9,
                     end_lr=1e-8, num_steps=1200, smoothing=0.9, num_sweeps=1)  # fmt: skip
    losses = list(result.losses)  # float32-rounded values of the script
    assert 100 < len(losses) < 1200
    assert not any(_stops_as_written(losses[: n + 1], 0.9, 4.0) for n in range(len(losses) - 1))
    assert _stops_as_written(losses, 0.9, 4.0)
    assert result.diverged_at == len(losses) - 1


def test_a_batch_norm_frozen_in_eval_mode_stays_frozen_through_the_sweep() -> None:
    # The sweep called model.train(): a batch norm the user froze normalized with batch
    # statistics during the sweep, so the curve was not that of the user's training.
    torch.manual_seed(0)
    norm = nn.BatchNorm1d(16)
    model = nn.Sequential(nn.Linear(2, 16), norm, nn.ReLU(), nn.Linear(16, 3))
    norm.eval()
    modes: list[bool] = []
    norm.register_forward_pre_hook(lambda module, inputs: modes.append(module.training))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(0)
    data = Dataset(torch.randn(256, 2, generator=generator), torch.arange(256) % 3)
    lr_find(model, optimizer, data, start_lr=1e-4, end_lr=1, num_steps=10, batch_size=32)
    assert modes
    assert not any(modes)
    assert model.training
    assert not norm.training


def test_one_inputs_targets_pair_is_refused_saying_what_to_pass() -> None:
    # Iterated as batches, the pair gave its inputs, then its targets: "a batch of type
    # Tensor", which did not say what to pass.
    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    data = _data()
    with pytest.raises(
        TypeError, match=r"pass Dataset\(inputs, targets\) .* \[\(inputs, targets\)\]"
    ):
        lr_find(model, optimizer, (data.inputs, data.targets), num_steps=5)
    result = lr_find(model, optimizer, [(data.inputs[:32], data.targets[:32])], num_steps=5)
    assert len(result.losses) == 5
