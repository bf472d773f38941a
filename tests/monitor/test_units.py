"""Which units the dead and saturated fractions count: a Linear layer's features (the last
dim, also on sequences), a convolution's channels (dim 1), and for an activation module
those of the layer that ran last before each of its calls; against fractions computed
here with the units named by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradwise import monitor
from tests.monitor.setups import outputs_of


def dead_fraction(output: torch.Tensor, unit_dim: int) -> float:
    """The fraction of units (along ``unit_dim``) never > 0."""
    per_unit = output.double().movedim(unit_dim, 0).flatten(1)  # (units, samples x positions)
    return float((per_unit.amax(dim=1) <= 0).double().mean())


def saturated_fraction(output: torch.Tensor, unit_dim: int) -> float:
    """The fraction of tanh units (along ``unit_dim``) with |y| > 0.99 on over half their
    samples and positions."""
    flat = (output.double().abs() > 0.99).double().movedim(unit_dim, 0).flatten(1)
    return float((flat.mean(dim=1) > 0.5).double().mean())


def activations(watch: monitor.Watch, step: int = 0) -> dict[str, dict]:
    return {
        r["layer"]: r for r in watch.records() if r["kind"] == "activation" and r["step"] == step
    }


@pytest.mark.parametrize("positions", [(10,), (5, 6)], ids=["tokens", "grid"])
def test_the_units_of_a_linear_layer_on_sequences_are_its_features(
    positions: tuple[int, ...],
) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 3)
    )
    with torch.no_grad():
        model[0].bias[:5] = -100.0  # 5 of the 16 features never fire, at any token
        model[2].weight.mul_(20.0)  # some tanh features flat on most tokens
    inputs = torch.randn(64, *positions, 8)  # (batch, *positions, features)
    outputs = outputs_of(model, inputs, "1", "3")
    targets = torch.zeros(*inputs.shape[:-1], 3)
    watch = monitor.watch(model, monitor_data=(inputs, targets), loss_fn="mse")
    layers = activations(watch)
    dead = dead_fraction(outputs["1"], unit_dim=-1)
    assert dead == 5 / 16
    assert layers["1"]["dead_fraction"] == pytest.approx(dead)
    saturated = saturated_fraction(outputs["3"], unit_dim=-1)
    assert 0 < saturated < 1
    assert layers["3"]["saturated_fraction"] == pytest.approx(saturated)


class ConvThenSequence(nn.Module):
    """A Conv1d -> BatchNorm -> ReLU body over (batch, channels, length), then a Linear ->
    ReLU over the same positions as (batch, length, features); the one ``act`` module is
    applied after both."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.norm = nn.Conv1d(4, 12, 3, padding=1), nn.BatchNorm1d(12)
        self.mix, self.head = nn.Linear(12, 10), nn.Linear(10, 3)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.act(self.norm(self.conv(x)))  # (batch, 12 channels, 16)
        return self.head(self.act(self.mix(hidden.transpose(1, 2))))  # (batch, 16, 3)


def test_an_activation_module_has_the_units_of_the_layer_that_ran_before_each_call() -> None:
    torch.manual_seed(0)
    model = ConvThenSequence()
    with torch.no_grad():
        model.norm.bias[:3] = -100.0  # 3 of the 12 channels never fire
        model.mix.bias[:6] = -100.0  # 6 of the 10 features never fire
    inputs = torch.randn(32, 4, 16)
    outputs = outputs_of(model, inputs, "act")
    expected = {
        "act": dead_fraction(outputs["act"], unit_dim=1),  # channels
        "act#2": dead_fraction(outputs["act#2"], unit_dim=-1),  # features
    }
    assert expected == {"act": 3 / 12, "act#2": 6 / 10}
    watch = monitor.watch(
        model, monitor_data=(inputs, torch.zeros(32, 16, 3)), loss_fn="mse", every=1
    )
    for _ in range(2):  # the first probe sees which layer ran last; the next ones remember
        watch.step(0.0)
    for step in (0, 1, 2):
        layers = activations(watch, step)
        assert {name: layers[name]["dead_fraction"] for name in expected} == expected


class ExtraCall(nn.Module):
    """A Conv1d -> ReLU; once ``extra`` is set, the ReLU is also applied after a Linear on
    (batch, length, features): a call the first probes did not see."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.mix = nn.Conv1d(2, 6, 3, padding=1), nn.Linear(6, 4)
        self.act = nn.ReLU()
        self.extra = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.act(self.conv(x))  # (batch, 6, 9)
        if not self.extra:
            return hidden.mean(dim=2)
        return self.act(self.mix(hidden.transpose(1, 2))).mean(dim=1)  # via (batch, 9, 4)


def test_a_call_the_probes_have_not_seen_is_learned_at_the_next_probe() -> None:
    torch.manual_seed(0)
    model = ExtraCall()
    with torch.no_grad():
        model.mix.bias[:3] = -100.0  # 3 of the 4 features never fire
    inputs = torch.randn(16, 2, 9)
    watch = monitor.watch(
        model, monitor_data=(inputs, torch.zeros(16)), loss_fn=lambda o, t: o.mean(), every=1
    )
    watch.step(0.0)
    model.extra = True
    output = outputs_of(model, inputs, "act")["act#2"]  # (batch, 9 positions, 4 features)
    assert dead_fraction(output, unit_dim=-1) == 3 / 4
    watch.step(0.0)  # act#2 is new: it takes the model's rule (dim 1: it has a convolution)
    watch.step(0.0)  # and from here on, the units of the Linear before it
    assert "act#2" not in activations(watch, 1)
    assert activations(watch, 2)["act#2"]["dead_fraction"] == dead_fraction(output, unit_dim=1)
    assert activations(watch, 3)["act#2"]["dead_fraction"] == 3 / 4


def test_without_a_layer_before_it_the_units_are_the_last_dim_unless_the_model_convolves() -> None:
    inputs = torch.randn(32, 5, 4)
    inputs[..., :3] = -inputs[..., :3].abs()  # 3 of the 4 features never > 0
    model = nn.Sequential(nn.ReLU())
    watch = monitor.watch(model, monitor_data=(inputs, torch.zeros_like(inputs)), loss_fn="mse")
    assert activations(watch)["0"]["dead_fraction"] == 3 / 4
    convolving = nn.Sequential(nn.ReLU(), nn.Conv1d(5, 2, 1))  # (batch, 5 channels, 4)
    watch = monitor.watch(convolving, monitor_data=(inputs, torch.zeros(32, 2, 4)), loss_fn="mse")
    assert activations(watch)["0"]["dead_fraction"] == dead_fraction(inputs, unit_dim=1) == 0.0
