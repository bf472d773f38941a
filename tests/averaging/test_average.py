"""The averages against torch's AveragedModel, hand-computed means and update_bn."""

from __future__ import annotations

import copy
import io
import re

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, update_bn

from gradwise.averaging import (
    ExponentialMovingAverage,
    PolyakAverage,
    StochasticWeightAverage,
    WeightAverage,
    swa_schedule,
)
from gradwise.schedules import ScheduleLR, constant


def _network(dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(3, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(dropout), nn.Linear(8, 2)
    ).double()


def _train(model: nn.Module, steps: int, on_step: object, lr: object = 0.05) -> list[float]:
    """SGD on a fixed random regression; ``on_step(step)`` after each step; the lrs used."""
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(steps, 16, 3, generator=generator, dtype=torch.float64)
    targets = torch.randn(steps, 16, 2, generator=generator, dtype=torch.float64)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scheduler = ScheduleLR(optimizer, lr) if callable(lr) else None
    used = []
    for step in range(1, steps + 1):
        used.append(optimizer.param_groups[0]["lr"])
        loss = nn.functional.mse_loss(model(inputs[step - 1]), targets[step - 1])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        on_step(step)  # type: ignore[operator]
    return used


def _float_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in module.state_dict().items() if v.is_floating_point()}


@pytest.mark.parametrize("use_buffers", [False, True])
@pytest.mark.parametrize(("start", "every"), [(0, 1), (5, 3)])
def test_ema_agrees_with_torch_averaged_model(use_buffers: bool, start: int, every: int) -> None:
    model = _network()
    ours = ExponentialMovingAverage(model, 0.9, start=start, every=every, use_buffers=use_buffers)
    oracle = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=use_buffers)
    updated = []

    def on_step(step: int) -> None:
        if ours.update(model, step):
            updated.append(step)
        if step > start and (step - start) % every == 0:
            oracle.update_parameters(model)

    _train(model, 30, on_step)
    assert updated == list(range(start + every, 31, every))
    assert ours.num_averaged == int(oracle.n_averaged) == len(updated)
    expected = _float_state(oracle.module)
    actual = _float_state(ours.module)
    assert expected.keys() == actual.keys()
    assert any("running_var" in key for key in actual)  # the buffers are compared too
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, rtol=0, atol=1e-14, msg=name)
    # The batch count is copied, not averaged (torch would average it as an integer).
    counts = ours.module.state_dict()["1.num_batches_tracked"]
    assert int(counts) == updated[-1]  # one training batch per step


@pytest.mark.parametrize(
    "make",
    [
        lambda m: ExponentialMovingAverage(m, 0.9, start=5, every=3, use_buffers=True),
        lambda m: PolyakAverage(m, start=5, every=3, use_buffers=True),
        lambda m: StochasticWeightAverage(m, start=5, every=3, use_buffers=True),
    ],
    ids=["ema", "polyak", "swa"],
)
def test_integer_buffers_are_copied_from_the_live_model_not_averaged(make: object) -> None:
    model = _network()
    average: WeightAverage = make(model)  # type: ignore[operator]
    counts_when_averaged = []

    def on_step(step: int) -> None:
        if average.update(model, step):
            counts_when_averaged.append(int(model[1].num_batches_tracked))  # type: ignore[index]

    _train(model, 30, on_step)
    assert len(counts_when_averaged) == average.num_averaged == 8  # after steps 8, 11, ..., 29
    counts = average.module.state_dict()["1.num_batches_tracked"]
    assert counts.dtype == torch.int64
    # The live count at the last averaging step, not an average of the counts 8, 11, ..., 29.
    assert int(counts) == counts_when_averaged[-1] == 29


@pytest.mark.parametrize("use_buffers", [False, True])
@pytest.mark.parametrize(
    "make",
    [
        lambda m, use_buffers: PolyakAverage(m, start=5, every=3, use_buffers=use_buffers),
        lambda m, use_buffers: StochasticWeightAverage(
            m, start=5, every=3, use_buffers=use_buffers
        ),
    ],
    ids=["polyak", "swa"],
)
def test_uniform_averages_equal_averaged_model_bit_for_bit(make: object, use_buffers: bool) -> None:
    model = _network()
    ours: WeightAverage = make(model, use_buffers)  # type: ignore[operator]
    oracle = AveragedModel(model, use_buffers=use_buffers)  # torch's default: the running mean

    def on_step(step: int) -> None:
        ours.update(model, step)
        if step > 5 and (step - 5) % 3 == 0:
            oracle.update_parameters(model)

    _train(model, 30, on_step)
    assert ours.num_averaged == int(oracle.n_averaged) == 8
    expected = _float_state(oracle.module)
    actual = _float_state(ours.module)
    assert expected.keys() == actual.keys()
    assert any("running_var" in key for key in actual)  # the buffers are compared too
    for name, tensor in expected.items():
        assert torch.equal(actual[name], tensor), name


def test_ema_decay_warmup_is_the_tensorflow_form() -> None:
    model = _network()
    ema = ExponentialMovingAverage(model, 0.95, decay_warmup=True)
    iterates: list[torch.Tensor] = []

    def on_step(step: int) -> None:
        ema.update(model, step)
        iterates.append(nn.utils.parameters_to_vector(model.parameters()).detach().clone())

    _train(model, 60, on_step)
    expected = iterates[0]
    for t, iterate in enumerate(iterates[1:], start=1):  # t iterates already averaged
        decay = min(0.95, (1 + t) / (10 + t))
        expected = decay * expected + (1 - decay) * iterate
    actual = nn.utils.parameters_to_vector(ema.module.parameters())
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-13)
    assert ema.decay_at(1) == pytest.approx(2 / 11)
    assert ema.decay_at(1000) == 0.95


def test_polyak_is_the_mean_of_the_stored_iterates() -> None:
    model = _network()
    average = PolyakAverage(model, start=7, every=2)
    stored: list[torch.Tensor] = []

    def on_step(step: int) -> None:
        average.update(model, step)
        if step > 7 and (step - 7) % 2 == 0:
            stored.append(nn.utils.parameters_to_vector(model.parameters()).detach().clone())

    _train(model, 40, on_step)
    expected = torch.stack(stored).mean(dim=0)
    actual = nn.utils.parameters_to_vector(average.module.parameters())
    assert average.num_averaged == len(stored) == 16
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-14)


def test_swa_averages_at_the_cycle_ends_like_averaged_model() -> None:
    model = _network()
    swa = StochasticWeightAverage(model, start=6, cycle_steps=4)
    oracle = AveragedModel(model)  # torch's default: the running mean
    ends = []

    def on_step(step: int) -> None:
        swa.update(model, step)
        if step in (10, 14, 18, 22, 26, 30):
            oracle.update_parameters(model)
            ends.append(step)

    lrs = _train(model, 30, on_step, lr=swa.schedule(constant(0.05), swa_lr=0.01))
    assert [lrs[step - 1] for step in ends] == pytest.approx([0.01] * len(ends))  # the low
    assert swa.num_averaged == int(oracle.n_averaged) == 6
    for name, tensor in _float_state(oracle.module).items():
        torch.testing.assert_close(
            _float_state(swa.module)[name], tensor, rtol=0, atol=1e-14, msg=name
        )


def test_swa_with_a_constant_rate_averages_every_k_steps_after_the_anneal() -> None:
    swa = StochasticWeightAverage(nn.Linear(1, 1), start=10, every=5, anneal_steps=3)
    assert [step for step in range(1, 40) if swa.should_update(step)] == [18, 23, 28, 33, 38]


@pytest.mark.parametrize("use_buffers", [False, True])
def test_an_average_follows_a_model_moved_after_it_was_made(use_buffers: bool) -> None:
    # model.double() (as model.cuda() would) after the average was made: the averaged copy
    # moves with it, its running mean continued in float64, and it takes the model's inputs.
    model = _network().float()
    ours = ExponentialMovingAverage(model, 0.9, use_buffers=use_buffers)
    _train(model.double(), 1, lambda step: ours.update(model, step))
    oracle = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=use_buffers)
    oracle.update_parameters(model)  # the first iterate is copied: the same start
    _train(
        model,
        6,
        lambda step: (ours.update(model, step + 1), oracle.update_parameters(model)),
    )
    assert ours.num_averaged == 7
    for name, value in _float_state(oracle.module).items():
        assert ours.module.state_dict()[name].dtype == torch.float64, name
        torch.testing.assert_close(ours.module.state_dict()[name], value, rtol=0, atol=0)
    ours.module.eval()
    ours.module(torch.randn(4, 3, dtype=torch.float64))  # float32 weights refused this


def _add_a_layer(model: nn.Module) -> str:
    model.add_module("5", nn.Linear(2, 2).double())  # the model grew a head
    return "'5.weight', '5.bias'"


def _add_a_buffer(model: nn.Module) -> str:
    model[4].register_buffer("scale", torch.ones(2, dtype=torch.float64))  # type: ignore[operator]
    return "'4.scale'"


def _remove_the_head(model: nn.Module) -> str:
    del model[4]  # type: ignore[arg-type]
    return "'4.weight', '4.bias'"


def _widen_a_layer(model: nn.Module) -> str:
    model[4] = nn.Linear(8, 3).double()  # type: ignore[index]
    return "'4.weight' (2, 8) -> (3, 8), '4.bias' (2,) -> (3,)"


@pytest.mark.parametrize("use_buffers", [False, True])
@pytest.mark.parametrize(
    ("change", "found"),
    [
        (_add_a_layer, "has 2 tensors that the average lacks"),
        (_add_a_buffer, "has 1 tensor that the average lacks"),
        (_remove_the_head, "lost 2 tensors that the average holds"),
        (_widen_a_layer, "has 2 tensors of another shape than the average's"),
    ],
)
def test_an_average_refuses_a_model_whose_tensors_changed_after_it_was_made(
    change: object, found: str, use_buffers: bool
) -> None:
    # torch's AveragedModel zips the two parameter lists without strict=True: a layer added
    # after the average was made was silently left out of it.
    model = _network()
    average = PolyakAverage(model, use_buffers=use_buffers)
    _train(model, 2, lambda step: average.update(model, step))
    names = change(model)  # type: ignore[operator]
    before = copy.deepcopy(average.module.state_dict())
    message = (
        f"The model given to PolyakAverage.update {found}: {names}. The average "
        "holds a copy of the model as it was when the average was made and averages "
        "only what that copy has. Make the average once the model is complete, or make "
        "a new average of the model as it is now."
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        average.update(model, 3)
    assert average.num_averaged == 2  # the average is left as it was
    for name, tensor in before.items():
        assert torch.equal(average.module.state_dict()[name], tensor), name


@pytest.mark.parametrize("use_buffers", [False, True])
def test_an_average_refuses_a_model_whose_weights_were_tied_after_it_was_made(
    use_buffers: bool,
) -> None:
    # Tying two weights of one shape changes no dtype, device or shape, but parameters()
    # then yields the shared weight once: AveragedModel paired the copy's '2.weight' with
    # the live '2.bias' (broadcast into it) and every later tensor with the wrong one.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4)).double()
    average = PolyakAverage(model, use_buffers=use_buffers)
    average.update(model, 1)
    model[2].weight = model[0].weight  # type: ignore[index]
    with pytest.raises(ValueError, match="lost 1 tensor that the average holds: '2.weight'"):
        average.update(model, 2)
    assert average.num_averaged == 1


@pytest.mark.parametrize("use_buffers", [False, True])
@pytest.mark.parametrize(
    "make",
    [
        lambda m, b: ExponentialMovingAverage(m, 0.9, use_buffers=b),
        lambda m, b: PolyakAverage(m, use_buffers=b),
    ],
)
def test_an_average_follows_one_layer_moved_after_it_was_made(
    make: object, use_buffers: bool
) -> None:
    # model[4].float() after the average was made: only the head moves, so the first
    # parameters still agree. AveragedModel would cast each new iterate of the head back
    # into float64 (Polyak, silently) or refuse it (EMA's lerp); the copy's head follows it.
    model = _network()
    average = make(model, use_buffers)  # type: ignore[operator]
    model[4].float()  # type: ignore[operator]
    model[4].register_forward_pre_hook(lambda _, inputs: (inputs[0].float(),))  # type: ignore[operator]
    # The loss in float64: torch 2.11's mse_loss backward refuses a float32 input with
    # float64 targets ("Found dtype Double but expected Float").
    model[4].register_forward_hook(lambda _, __, output: output.double())  # type: ignore[operator]
    oracle = copy.deepcopy(average.averaged_model)
    oracle.module[4].float()  # the oracle was made after the move
    _train(model, 6, lambda step: (average.update(model, step), oracle.update_parameters(model)))
    assert average.num_averaged == 6
    for name, value in oracle.module.state_dict().items():
        mine = average.module.state_dict()[name]
        assert mine.dtype == model.state_dict()[name].dtype == value.dtype, name
        torch.testing.assert_close(mine, value, rtol=0, atol=0)


def test_recompute_batch_norm_equals_update_bn_without_dropout() -> None:
    model = _network()
    average = PolyakAverage(model)
    _train(model, 20, lambda step: average.update(model, step))
    batches = list(torch.randn(5, 32, 3, dtype=torch.float64, generator=torch.Generator()))
    reference = copy.deepcopy(average.module)
    update_bn(batches, reference)
    average.module.eval()
    average.recompute_batch_norm([(batch, None) for batch in batches])
    for name, tensor in reference.state_dict().items():
        assert torch.equal(average.module.state_dict()[name], tensor), name
    assert not any(module.training for module in average.module.modules())  # modes restored


def test_recompute_batch_norm_keeps_dropout_off_and_the_rng_untouched() -> None:
    model = _network(dropout=0.5)
    average = PolyakAverage(model)
    average.update(model, 1)
    batches = list(torch.randn(4, 32, 3, dtype=torch.float64))
    state = torch.get_rng_state()
    average.recompute_batch_norm(batches)
    assert torch.equal(torch.get_rng_state(), state)
    first = average.module.state_dict()["1.running_var"].clone()
    average.recompute_batch_norm(batches)  # deterministic: no dropout noise in the pass
    assert torch.equal(average.module.state_dict()["1.running_var"], first)
    without_dropout = copy.deepcopy(average.module)
    without_dropout[3] = nn.Identity()  # type: ignore[index]
    update_bn(batches, without_dropout)
    assert torch.equal(without_dropout.state_dict()["1.running_var"], first)


@pytest.mark.parametrize(
    "make",
    [
        lambda m: ExponentialMovingAverage(m, 0.8, decay_warmup=True, start=3),
        lambda m: PolyakAverage(m, start=2),
        lambda m: StochasticWeightAverage(m, start=4, every=3),
    ],
)
def test_state_dict_round_trip_continues_exactly(make: object) -> None:
    model = _network()
    whole: WeightAverage = make(model)  # type: ignore[operator]
    saved: dict[str, bytes] = {}

    def on_step(step: int) -> None:
        whole.update(model, step)
        if step == 12:
            buffer = io.BytesIO()
            torch.save(whole.state_dict(), buffer)
            saved["state"] = buffer.getvalue()

    _train(model, 25, on_step)
    # A fresh average loads the step-12 state (through weights_only, as checkpoints do) and
    # sees steps 13 to 25 of the same, deterministic, training again.
    resumed: WeightAverage = make(_network())  # type: ignore[operator]
    resumed.load_state_dict(torch.load(io.BytesIO(saved["state"]), weights_only=True))
    replay = _network()
    _train(replay, 25, lambda step: step > 12 and resumed.update(replay, step))
    assert resumed.num_averaged == whole.num_averaged > 0
    for name, tensor in whole.averaged_model.state_dict().items():
        assert torch.equal(resumed.averaged_model.state_dict()[name], tensor), name


def test_loading_another_kind_of_average_is_refused() -> None:
    state = PolyakAverage(nn.Linear(2, 1), start=3).state_dict()
    with pytest.raises(
        ValueError, match="saved average is a PolyakAverage first averaged after step 3"
    ):
        ExponentialMovingAverage(nn.Linear(2, 1), start=3).load_state_dict(state)


def test_loading_an_ema_saved_with_other_settings_is_refused() -> None:
    # kind and cadence agree; the decay, its warmup or use_buffers did not, and the
    # average used to go on silently with the new ones.
    state = ExponentialMovingAverage(nn.Linear(2, 1), 0.99, start=3).state_dict()
    ExponentialMovingAverage(nn.Linear(2, 1), 0.99, start=3).load_state_dict(state)
    with pytest.raises(ValueError, match=r"made with decay=0\.99 \(this one: 0\.999\)"):
        ExponentialMovingAverage(nn.Linear(2, 1), 0.999, start=3).load_state_dict(state)
    with pytest.raises(ValueError, match=r"decay_warmup=False \(this one: True\)"):
        ExponentialMovingAverage(nn.Linear(2, 1), 0.99, start=3, decay_warmup=True).load_state_dict(
            state
        )
    polyak = PolyakAverage(nn.Linear(2, 1), start=3).state_dict()
    with pytest.raises(ValueError, match=r"use_buffers=False \(this one: True\)"):
        PolyakAverage(nn.Linear(2, 1), start=3, use_buffers=True).load_state_dict(polyak)
    del state["settings"]  # saved before the settings were kept: not checked on them
    ExponentialMovingAverage(nn.Linear(2, 1), 0.999, start=3).load_state_dict(state)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda m: ExponentialMovingAverage(m, 1.0),
            "The 'decay' parameter of ExponentialMovingAverage must be a float in (0, 1). Got 1.0 instead.",
        ),
        (
            lambda m: ExponentialMovingAverage(m, 0.0),
            "'decay' parameter of ExponentialMovingAverage must be a float in (0, 1). Got 0.0",
        ),
        (
            lambda m: PolyakAverage(m, start=-1),
            "The 'start' parameter of PolyakAverage must be an int >= 0. Got -1 instead.",
        ),
        (
            lambda m: PolyakAverage(m, every=0),
            "'every' parameter of PolyakAverage must be an int >= 1",
        ),
        (
            lambda m: PolyakAverage(object()),
            "'model' parameter of PolyakAverage must be an nn.Module",
        ),
        (
            lambda m: StochasticWeightAverage(m, start=5),
            "'every' parameter of StochasticWeightAverage must be given when 'cycle_steps' is None",
        ),
        (
            lambda m: StochasticWeightAverage(m, start=5, every=2, cycle_steps=3),
            "'every' parameter of StochasticWeightAverage",
        ),
        (
            lambda m: StochasticWeightAverage(m, start=5, cycle_steps=3, anneal_steps=2),
            "'anneal_steps' parameter of StochasticWeightAverage must be 0 with 'cycle_steps'",
        ),
        (
            lambda m: swa_schedule(constant(0.1), start=3, swa_lr=-0.1),
            "'swa_lr' parameter of swa_schedule must be a finite float >= 0. Got -0.1",
        ),
    ],
)
def test_bad_arguments_raise_the_standard_error(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        make(nn.Linear(2, 1))  # type: ignore[operator]


def test_recompute_batch_norm_with_no_batches_is_refused_and_keeps_the_statistics() -> None:
    # The statistics used to be reset and then left at mean 0, variance 1 by an empty
    # pass (an exhausted iterator, an empty split): an average evaluated with made-up
    # statistics, without a word.
    model = _network()
    average = PolyakAverage(model)
    _train(model, 5, lambda step: average.update(model, step))
    before = copy.deepcopy(average.module.state_dict())
    batches = iter(list(torch.randn(3, 16, 3, dtype=torch.float64)))
    average.recompute_batch_norm(batches)
    recomputed = copy.deepcopy(average.module.state_dict())
    assert not torch.equal(recomputed["1.running_var"], before["1.running_var"])
    with pytest.raises(ValueError, match=r"recompute_batch_norm got no batches"):
        average.recompute_batch_norm(batches)  # exhausted
    for name, tensor in recomputed.items():
        assert torch.equal(average.module.state_dict()[name], tensor), name
    PolyakAverage(nn.Linear(3, 1)).recompute_batch_norm([])  # no batch norm: nothing to do


def test_recompute_batch_norm_takes_a_first_batch_that_is_none_for_a_batch() -> None:
    # "No batches" is told by the iterable ending, not by a first item that is None (a
    # custom model may take anything as its input).
    class TakesNone(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.BatchNorm1d(2)

        def forward(self, inputs: object) -> torch.Tensor:
            return self.norm(torch.ones(4, 2) if inputs is None else inputs)

    model = TakesNone()
    average = PolyakAverage(model)
    average.update(model, 1)
    average.recompute_batch_norm([None])
    assert torch.equal(average.module.norm.running_mean, torch.ones(2))


@pytest.mark.parametrize(
    ("model", "step", "message"),
    [
        # 2.5 was silently never an averaging step; 4.0 was one
        (
            None,
            2.5,
            "The 'step' parameter of PolyakAverage.update must be an int >= 0. Got 2.5 instead.",
        ),
        (
            None,
            4.0,
            "The 'step' parameter of PolyakAverage.update must be an int >= 0. Got 4.0 instead.",
        ),
        (
            None,
            "3",
            "The 'step' parameter of PolyakAverage.update must be an int >= 0. Got '3' instead.",
        ),
        (
            None,
            None,
            "The 'step' parameter of PolyakAverage.update must be an int >= 0. Got None instead.",
        ),
        (
            "model",
            3,
            "The 'model' parameter of PolyakAverage.update must be an nn.Module. Got 'model' instead.",
        ),
    ],
)
def test_update_refuses_a_step_that_is_not_a_count_or_a_model_that_is_not_a_module(
    model: object, step: object, message: str
) -> None:
    live = nn.Linear(2, 1)
    average = PolyakAverage(live)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        average.update(live if model is None else model, step)  # type: ignore[arg-type]
    assert average.num_averaged == 0
    assert average.update(live, 4)
    assert average.num_averaged == 1


@pytest.mark.parametrize(
    ("state", "lacks"),
    [
        (
            lambda average: average.averaged_model.state_dict(),
            "'kind', 'first', 'every', 'averaged_model'",
        ),
        (lambda average: average.module.state_dict(), "'kind', 'first', 'every', 'averaged_model'"),
        (
            lambda average: {
                k: v for k, v in average.state_dict().items() if k != "averaged_model"
            },
            "'averaged_model'",
        ),
    ],
    ids=["averaged_model", "module", "no weights"],
)
def test_loading_a_state_it_did_not_write_is_a_clear_error(state: object, lacks: str) -> None:
    # It read "The saved average is a None first averaged after step None every None steps"
    # (or a bare KeyError: 'averaged_model').
    average = ExponentialMovingAverage(nn.Linear(2, 1), start=3)
    message = (
        "ExponentialMovingAverage.load_state_dict needs the keys 'kind', 'first', 'every', "
        f"'averaged_model' (what state_dict() returns); the state given lacks {lacks}."
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        average.load_state_dict(state(average))  # type: ignore[operator]


def test_loading_an_swa_saved_with_another_learning_rate_shape_is_refused() -> None:
    # first (start + anneal_steps) and every (the period) agreed, so these loaded silently.
    cyclical = StochasticWeightAverage(nn.Linear(2, 1), start=10, cycle_steps=5).state_dict()
    StochasticWeightAverage(nn.Linear(2, 1), start=10, cycle_steps=5).load_state_dict(cyclical)
    with pytest.raises(ValueError, match=r"made with cycle_steps=5 \(this one: None\)"):
        StochasticWeightAverage(nn.Linear(2, 1), start=10, every=5).load_state_dict(cyclical)
    annealed = StochasticWeightAverage(nn.Linear(2, 1), start=10, every=3, anneal_steps=5)
    with pytest.raises(
        ValueError, match=r"made with start=10 \(this one: 15\), anneal_steps=5 \(this one: 0\)"
    ):
        StochasticWeightAverage(nn.Linear(2, 1), start=15, every=3).load_state_dict(
            annealed.state_dict()
        )
