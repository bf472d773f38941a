"""watch(): what it measures (against independent computations), that it leaves the model
alone, its hooks, the Trainer callback, checkpoints, and its argument checks."""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradwise import Finding, Trainer, monitor, optim
from gradwise.data import load_dataset
from gradwise.monitor import Thresholds
from tests.monitor.setups import outputs_of, sgd_step


def small_model(activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(8, 16), activation(), nn.Linear(16, 16), activation(), nn.Linear(16, 3)
    )


def data(count: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(count, 8, generator=generator)
    return inputs, (inputs[:, 0] > 0).long() + (inputs[:, 1] > 1).long()


def records(watch: monitor.Watch, kind: str, step: int | None = None) -> list[dict]:
    return [r for r in watch.records() if r["kind"] == kind and step in (None, r["step"])]


# -- measurements against independent computations ---------------------------------------


def test_gradient_norms_and_update_ratios_match_a_hand_computation() -> None:
    torch.manual_seed(0)
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    batch = data(64)
    watch = monitor.watch(model, optimizer, monitor_data=data(32, seed=1))
    expected = {}
    for step in range(1, 11):
        inputs, targets = batch
        loss = F.cross_entropy(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
        optimizer.step()
        watch.step(loss)
        expected[step] = (
            before,
            grads,
            {n: p.detach().clone() for n, p in model.named_parameters()},
        )
    for step in (1, 10):  # the measured steps: 1, then every 10
        before, grads, after = expected[step]
        total = math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads.values()))
        (gradients,) = records(watch, "gradients", step)
        assert gradients["grad_norm"] == pytest.approx(total, rel=1e-5)
        first, last = float(grads["0.weight"].norm()), float(grads["4.weight"].norm())
        assert gradients["first_last_grad_ratio"] == pytest.approx(first / last, rel=1e-5)
        weights = {r["layer"]: r for r in records(watch, "weight", step)}
        assert set(weights) == {"0.weight", "2.weight", "4.weight"}
        for name, record in weights.items():
            ratio = float((after[name] - before[name]).norm() / before[name].norm())
            assert record["update_ratio"] == pytest.approx(ratio, rel=1e-4)
            assert record["grad_norm"] == pytest.approx(float(grads[name].norm()), rel=1e-5)
    assert records(watch, "gradients", 5) == []  # not a measured step


@pytest.mark.parametrize("zero_grad_before_step", [False, True])
@pytest.mark.parametrize("as_keyword", [False, True])
def test_a_step_with_a_closure_gets_its_update_ratios_from_step_1(
    as_keyword: bool, zero_grad_before_step: bool
) -> None:
    # LBFGS calls the closure (and backward) several times inside one step: before step 1
    # no parameter has a gradient yet, and with zero_grad before each step none ever does.
    torch.manual_seed(0)
    model = small_model()
    optimizer = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=4)
    inputs, targets = data(64)
    watch = monitor.watch(model, optimizer, monitor_data=data(32, seed=1), cheap_every=2)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(inputs), targets)
        loss.backward()
        return loss

    expected = {}
    for step in range(1, 6):
        if zero_grad_before_step:
            optimizer.zero_grad()
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        loss = optimizer.step(closure=closure) if as_keyword else optimizer.step(closure)
        watch.step(loss)
        after = {n: p.detach().clone() for n, p in model.named_parameters()}
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
        expected[step] = before, after, grads
    for step in (1, 2, 4):  # the measured steps: 1, then every 2
        before, after, grads = expected[step]
        weights = {r["layer"]: r for r in records(watch, "weight", step)}
        assert set(weights) == {"0.weight", "2.weight", "4.weight"}
        for name, record in weights.items():
            ratio = float((after[name] - before[name]).norm() / before[name].norm())
            assert ratio > 0
            assert record["update_ratio"] == pytest.approx(ratio, rel=1e-4)
            # The gradients the closure left, as after any other step.
            assert record["grad_norm"] == pytest.approx(float(grads[name].norm()), rel=1e-5)
    assert records(watch, "weight", 3) == []  # not a measured step
    assert list(watch.history.step_learning_rate.steps) == [1, 2, 4]


class SparseBag(nn.Module):
    """An nn.Embedding(sparse=True) (its gradient a sparse tensor) and a read-out."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(50, 8, sparse=True)
        self.out = nn.Linear(8 * 3, 4)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(self.embedding(tokens).flatten(1))


def test_a_sparse_gradient_is_measured_and_checked_like_its_dense_twin() -> None:
    # torch.optim.SGD steps sparse gradients; the foreach norms take none (the watch crashed
    # at its first step). A sparse gradient's norm is its values' norm.
    torch.manual_seed(0)
    model = SparseBag()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 50, (64, 3), generator=generator)
    targets = torch.randint(0, 4, (64,), generator=generator)
    watch = monitor.watch(model, optimizer, monitor_data=(tokens, targets))
    norms = {}
    for step in range(1, 14):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(tokens), targets)
        loss.backward()
        assert model.embedding.weight.grad.is_sparse
        norms[step] = float(model.embedding.weight.grad.to_dense().norm())
        if step == 12:  # not a measured step: the sentinel's check
            model.embedding.weight.grad._values()[0, 0] = float("nan")
        optimizer.step()
        found = watch.step(loss)
    weights = {r["layer"]: r for r in records(watch, "weight", 10)}
    assert weights["embedding.weight"]["grad_norm"] == pytest.approx(norms[10], rel=1e-5)
    (nonfinite,) = [f for f in watch.findings() if f.kind is Finding.NONFINITE_LOSS]
    assert nonfinite.step == 12
    assert nonfinite.evidence["layer"] == "embedding.weight"
    assert found == []  # raised once, at step 12


def test_a_float16_gradient_whose_norm_exceeds_float16_is_measured_not_called_nan() -> None:
    # Every entry 1000 (finite in float16); the norm, 1e5, is not: taken in float16 it
    # read as inf, a false NONFINITE_LOSS at the first measured step.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 4)).half()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-9)
    inputs, targets = torch.randn(32, 100).half(), torch.randint(0, 4, (32,))
    watch = monitor.watch(model, optimizer, monitor_data=(inputs, targets))
    optimizer.zero_grad()
    loss = F.cross_entropy(model(inputs).float(), targets)
    loss.backward()
    model[0].weight.grad.fill_(1000.0)
    optimizer.step()
    assert watch.step(loss) == []
    weights = {r["layer"]: r for r in records(watch, "weight", 1)}
    assert weights["0.weight"]["grad_norm"] == pytest.approx(1e5, rel=1e-3)


def test_a_float32_gradient_beyond_the_float32_norms_range_is_measured_not_called_nan() -> None:
    # Entries of 1e20 are finite in float32; their squares are not, so a float32 norm read
    # inf: a false NONFINITE_LOSS at a measured step, where EXPLODING_GRADIENTS is meant.
    torch.manual_seed(0)
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    inputs, targets = data(32)
    watch = monitor.watch(model, optimizer, monitor_data=data(32, seed=1))
    optimizer.zero_grad()
    loss = F.cross_entropy(model(inputs), targets)
    loss.backward()
    model[2].weight.grad.fill_(1e20)
    optimizer.step()
    found = watch.step(loss)
    assert Finding.NONFINITE_LOSS not in [finding.kind for finding in found]
    weights = {r["layer"]: r for r in records(watch, "weight", 1)}
    expected = 1e20 * math.sqrt(model[2].weight.numel())
    assert weights["2.weight"]["grad_norm"] == pytest.approx(expected, rel=1e-6)


def test_activation_statistics_match_the_layer_outputs() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 16), nn.Tanh(), nn.Linear(16, 3)
    )
    with torch.no_grad():
        model[0].bias[:10] = -100.0  # ten units that never fire
        model[2].weight.mul_(20.0)  # pushes tanh units into the flat region
    inputs, targets = data()
    outputs = outputs_of(model, inputs, "1", "3")
    watch = monitor.watch(model, monitor_data=(inputs, targets))
    layers = {r["layer"]: r for r in records(watch, "activation", 0)}
    assert set(layers) == {"1", "3"}
    for index in (1, 3):
        output = outputs[str(index)].double()
        assert layers[str(index)]["mean"] == pytest.approx(float(output.mean()), rel=1e-5)
        assert layers[str(index)]["std"] == pytest.approx(
            float(output.std(unbiased=False)), rel=1e-4
        )
    dead = float((outputs["1"].amax(dim=0) <= 0).double().mean())
    assert dead >= 10 / 32
    assert layers["1"]["dead_fraction"] == pytest.approx(dead)
    flat_share = (outputs["3"].abs() > 0.99).double().mean(dim=0)
    assert layers["3"]["saturated_fraction"] == pytest.approx(
        float((flat_share > 0.5).double().mean())
    )
    assert 0 < layers["3"]["saturated_fraction"] < 1
    assert layers["1"]["saturated_fraction"] is None
    assert layers["3"]["dead_fraction"] is None
    (probe,) = records(watch, "probe", 0)
    with torch.no_grad():
        scores = model(inputs)
    assert probe["monitor_loss"] == pytest.approx(float(F.cross_entropy(scores, targets)), rel=1e-6)
    assert probe["monitor_accuracy"] == float((scores.argmax(1) == targets).double().mean())


@pytest.mark.parametrize("activation", [nn.ReLU, nn.GELU, None], ids=["relu", "gelu", "none"])
@pytest.mark.parametrize(
    ("bias", "weight_scale"),
    [(1e3, 0.5), (-3e4, 1.0), (1e3, 0.0), (0.1, 0.0)],
    ids=["mean-1e3", "mean-minus-3e4", "constant-1e3", "constant-0.1"],
)
def test_the_std_of_activations_far_from_zero_matches_float64(
    activation: type[nn.Module] | None, bias: float, weight_scale: float
) -> None:
    # |mean| >> std: float32 E[x^2] - E[x]^2 cancels (at mean 1e3 and std ~0.3 it read 0).
    torch.manual_seed(0)
    body = [nn.Linear(8, 32)] + ([activation()] if activation is not None else [])
    model = nn.Sequential(*body, nn.Linear(32, 3))
    with torch.no_grad():
        model[0].weight.mul_(weight_scale)
        # Under an activation, in its linear region: every ReLU unit active.
        model[0].bias.fill_(bias if activation is None else abs(bias))
    inputs, targets = data()
    watched = ["1"] if activation is not None else ["0", "1"]  # else the Linear outputs
    outputs = outputs_of(model, inputs, *watched)
    watch = monitor.watch(model, monitor_data=(inputs, targets))
    layers = {r["layer"]: r for r in records(watch, "activation", 0)}
    for name in watched:
        output = outputs[name].double()
        expected = float(output.std(unbiased=False))
        assert layers[name]["std"] == pytest.approx(expected, rel=1e-4, abs=1e-9)
        assert layers[name]["mean"] == pytest.approx(float(output.mean()), rel=1e-6)
    if weight_scale > 0:
        assert float(outputs[watched[0]].std()) > 0.1  # not a constant


def test_histograms_match_numpy_and_count_nonfinite_values_apart() -> None:
    torch.manual_seed(0)
    model = small_model(nn.Tanh)
    inputs, targets = data(100)
    inputs[3, 2] = float("nan")  # one sample's activations become NaN
    outputs = outputs_of(model, inputs, "1")
    watch = monitor.watch(model, monitor_data=(inputs, targets), num_bins=12)
    histogram = watch.histograms("activations")[0]["1"]
    values = outputs["1"].flatten()
    finite = values[torch.isfinite(values)].numpy()
    assert histogram.nan == int(torch.isnan(values).sum()) == 16  # one sample x 16 units
    assert histogram.total == values.numel()
    assert histogram.values == finite.size
    counts, _ = np.histogram(finite, bins=np.array(histogram.edges, dtype=np.float32))
    assert histogram.counts == counts.tolist()
    assert histogram.edges[0] == pytest.approx(finite.min())
    assert histogram.edges[-1] == pytest.approx(finite.max())


def near_bin_edges(low: float, high: float, num_bins: int) -> torch.Tensor:
    """Values on each bin edge of [low, high] and one float32 step either side of it."""
    edges = torch.linspace(low, high, num_bins + 1)
    above = torch.nextafter(edges, torch.tensor(math.inf))
    below = torch.nextafter(edges, torch.tensor(-math.inf))
    return torch.cat([edges, above, below]).clamp(low, high)


@pytest.mark.parametrize(
    ("values", "num_bins"),
    [
        (torch.randn(4096, generator=torch.Generator().manual_seed(0)) * 3, 30),
        (near_bin_edges(-1.8151915, 1.4219549, 30), 30),  # rounding decides the bin
        (torch.arange(-3.0, 4.0).repeat(500), 6),  # every value on a bin edge
        (torch.arange(0.0, 31.0).div(7).repeat(100), 30),
        (torch.rand(1000, generator=torch.Generator().manual_seed(1)) * 1e-6, 7),
        (torch.full((300,), 3.25), 30),  # constant: the range is (v - 0.5, v + 0.5)
        (torch.full((300,), 1e10), 30),  # a range below float32's resolution
    ],
)
def test_histogram_counts_are_the_counts_of_torch_histc(
    values: torch.Tensor, num_bins: int
) -> None:
    # The watch bins the samples of several probes at once in numpy, with histc's arithmetic.
    model = nn.Sequential(nn.Linear(1, 1))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.zero_()
    inputs = values.reshape(-1, 1)
    monitor_data = (inputs, torch.zeros(len(inputs)))
    watch = monitor.watch(model, monitor_data=monitor_data, loss_fn="mse", num_bins=num_bins)
    histogram = watch.histograms()[0]["0"]  # the Linear's output: the values themselves
    low, high = float(values.min()), float(values.max())
    if low == high:
        low, high = low - 0.5, high + 0.5
    expected = torch.histc(values, num_bins, low, high)
    assert histogram.counts == [int(count) for count in expected.tolist()]
    assert (histogram.edges[0], histogram.edges[-1]) == (low, high)


def test_histograms_do_not_depend_on_when_they_are_read_or_saved() -> None:
    # The samples of several probes wait to be binned together (the latest ones until the
    # histograms are read or saved): reading them after every step, only at the end, or
    # from a checkpoint gives the same histograms.
    def run(read_every_step: bool) -> monitor.Watch:
        torch.manual_seed(0)
        model = small_model(nn.Tanh)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        watch = monitor.watch(model, optimizer, monitor_data=data(), every=1, histogram_values=100)
        for step in range(1, 41):
            watch.step(sgd_step(model, optimizer, data(64, seed=step)))
            if read_every_step:
                assert max(watch.histograms("gradients")) == step
        return watch

    read, unread = run(True), run(False)
    restored = monitor.watch(small_model(nn.Tanh), monitor_data=data())
    restored.load_state_dict(unread.state_dict())
    for kind in ("activations", "gradients"):
        assert sorted(read.histograms(kind)) == list(range(0 if kind == "activations" else 1, 41))
        assert unread.histograms(kind) == read.histograms(kind)
        assert restored.histograms(kind) == read.histograms(kind)


def test_large_tensors_are_histogrammed_from_a_fixed_sample() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 512), nn.ReLU(), nn.Linear(512, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    watch = monitor.watch(model, optimizer, monitor_data=data(), every=2, histogram_values=1000)
    for _ in range(4):
        watch.step(sgd_step(model, optimizer, data(64)))
    activations = watch.histograms("activations")
    assert sorted(activations) == [0, 2, 4]
    assert {h.values for layers in activations.values() for h in layers.values()} == {1000}
    assert activations[4]["1"].total == 256 * 512
    gradients = watch.histograms("gradients")
    assert sorted(gradients) == [2, 4]
    assert set(gradients[2]) == {"0.weight", "2.weight"}
    assert sum(gradients[2]["0.weight"].counts) == 1000  # of its 4096 entries


class SharedActivation(nn.Module):
    """One nn.ReLU module applied after both hidden layers."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(8, 16), nn.Linear(16, 8)
        self.head = nn.Linear(8, 3)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.second(self.act(self.first(x)))))


def test_each_call_of_a_reused_activation_module_is_its_own_layer() -> None:
    torch.manual_seed(0)
    model = SharedActivation()
    with torch.no_grad():
        model.second.bias[:6] = -100.0  # 6 of the 8 units of the second call never fire
    inputs, targets = data()
    with torch.no_grad():  # the two calls' outputs, by hand
        first = torch.relu(model.first(inputs))
        expected = {"act": first, "act#2": torch.relu(model.second(first))}
    watch = monitor.watch(model, monitor_data=(inputs, targets), every=1)
    activations = records(watch, "activation", 0)
    assert [r["layer"] for r in activations] == ["act", "act#2"]  # one record per call
    histograms = watch.histograms()[0]
    assert set(histograms) == {"act", "act#2"}
    for record, (name, output) in zip(activations, expected.items(), strict=True):
        dead = float((output.amax(dim=0) <= 0).double().mean())
        assert record["dead_fraction"] == pytest.approx(dead)
        assert record["mean"] == pytest.approx(float(output.double().mean()), rel=1e-5)
        assert histograms[name].total == output.numel()
        assert watch.history.dead_fraction[name].values == [pytest.approx(dead)]
    assert activations[0]["dead_fraction"] < 0.5 < activations[1]["dead_fraction"] == 0.75
    assert watch.findings() == []  # one probe: not sustained yet
    (finding,) = watch.step(1.0)  # the second probe
    assert finding.kind is Finding.DEAD_UNITS
    assert finding.evidence["layer"] == "act#2"


class TwoOutputs(nn.Module):
    """Returns (scores, features), or {"scores": scores}."""

    def __init__(self, as_dict: bool) -> None:
        super().__init__()
        self.body, self.head, self.act = nn.Linear(8, 16), nn.Linear(16, 3), nn.ReLU()
        self.as_dict = as_dict

    def forward(self, x: torch.Tensor) -> object:
        features = self.act(self.body(x))
        scores = self.head(features)
        return {"scores": scores} if self.as_dict else (scores, features)


@pytest.mark.parametrize("as_dict", [False, True])
def test_a_custom_loss_gets_whatever_the_model_returns(as_dict: bool) -> None:
    torch.manual_seed(0)
    model = TwoOutputs(as_dict)

    def loss_fn(outputs: dict | tuple, targets: torch.Tensor) -> torch.Tensor:
        scores = outputs["scores"] if isinstance(outputs, dict) else outputs[0]
        return F.cross_entropy(scores, targets)

    (inputs, targets), validation = data(), data(64, seed=1)
    watch = monitor.watch(
        model, monitor_data=(inputs, targets), validation_data=validation, loss_fn=loss_fn
    )
    (probe,) = records(watch, "probe", 0)
    with torch.no_grad():
        expected = float(loss_fn(model(inputs), targets))
        expected_val = float(loss_fn(model(validation[0]), validation[1]))
    assert probe["monitor_loss"] == pytest.approx(expected, rel=1e-6)
    assert probe["val_loss"] == pytest.approx(expected_val, rel=1e-6)
    assert "monitor_accuracy" not in probe  # accuracy needs a tensor of class scores


def test_a_named_loss_on_outputs_that_are_not_a_tensor_warns_once_and_is_skipped() -> None:
    with pytest.warns(UserWarning, match="returns a 'tuple' object, not a tensor"):
        watch = monitor.watch(TwoOutputs(as_dict=False), monitor_data=data(), every=1)
    watch.step(1.0)  # probes again, without a second warning (an error in the tests)
    assert [sorted(r) for r in records(watch, "probe")] == [["kind", "step"]] * 2


@pytest.mark.parametrize(
    ("model_dtype", "inputs_dtype", "targets_dtype"),
    [
        (torch.float32, torch.float32, torch.int32),  # int32 classes, as checks.sanity takes
        (torch.float64, torch.float32, torch.int64),  # float32 data for a float64 model
    ],
)
def test_monitoring_data_takes_the_model_dtype_and_int64_targets(
    model_dtype: torch.dtype, inputs_dtype: torch.dtype, targets_dtype: torch.dtype
) -> None:
    torch.manual_seed(0)
    model = small_model().to(model_dtype)
    inputs, targets = data()
    batch = (inputs.to(inputs_dtype), targets.to(targets_dtype))
    watch = monitor.watch(model, monitor_data=batch, validation_data=batch)
    (probe,) = records(watch, "probe", 0)
    with torch.no_grad():
        scores = model(inputs.to(model_dtype))
    loss = float(F.cross_entropy(scores, targets))
    assert probe["monitor_loss"] == pytest.approx(loss, rel=1e-6)
    assert probe["val_loss"] == pytest.approx(loss, rel=1e-6)
    assert probe["monitor_accuracy"] == float((scores.argmax(1) == targets).double().mean())


# -- probes leave the model alone ------------------------------------------------------------


class Regularized(nn.Module):
    """Dropout (draws random numbers), batch norm (buffers), a frozen eval-mode part."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.3))
        self.frozen = nn.Sequential(nn.Linear(32, 32), nn.BatchNorm1d(32), nn.ReLU())
        self.head = nn.Linear(32, 3)
        self.frozen.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.frozen(self.body(x)))


def train_regularized(with_watch: bool) -> tuple[dict[str, torch.Tensor], list[bool], torch.Tensor]:
    torch.manual_seed(0)
    model = Regularized()
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    watch = None
    if with_watch:
        watch = monitor.watch(
            model,
            optimizer,
            monitor_data=data(),
            validation_data=data(64, 2),
            every=1,
            cheap_every=1,
        )
    for step in range(30):
        inputs, targets = data(32, seed=step)
        loss = F.cross_entropy(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if watch is not None:
            grads = [p.grad.clone() for p in model.parameters()]
            watch.step(loss)
            assert all(
                torch.equal(g, p.grad) for g, p in zip(grads, model.parameters(), strict=True)
            )
    state = {k: v.clone() for k, v in model.state_dict().items()}
    return state, [m.training for m in model.modules()], torch.rand(3)


def test_probes_leave_weights_buffers_modes_gradients_and_rng_as_they_were() -> None:
    plain, watched = train_regularized(False), train_regularized(True)
    assert plain[0].keys() == watched[0].keys()
    assert all(torch.equal(plain[0][k], watched[0][k]) for k in plain[0])  # incl. BN buffers
    assert plain[1] == watched[1]  # every module's train/eval mode, the frozen part too
    assert torch.equal(plain[2], watched[2])  # the global RNG continued identically


def hook_counts(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, int, int]:
    forward = sum(len(m._forward_hooks) for m in model.modules())
    pre = sum(len(m._forward_pre_hooks) for m in model.modules())
    return forward, pre, len(optimizer._optimizer_step_pre_hooks)


def test_hooks_exist_only_while_needed_and_close_removes_them() -> None:
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with monitor.watch(model, optimizer, monitor_data=data()) as watch:
        assert hook_counts(model, optimizer) == (0, 0, 1)  # forward hooks only inside probes
        for _ in range(3):
            watch.step(sgd_step(model, optimizer, data(32)))
    assert hook_counts(model, optimizer) == (0, 0, 0)
    watch.close()  # idempotent


def test_without_monitoring_data_the_first_training_inputs_are_kept() -> None:
    torch.manual_seed(0)
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    watch = monitor.watch(model, optimizer, every=5)
    assert hook_counts(model, optimizer) == (0, 1, 1)
    for step in range(10):
        watch.step(sgd_step(model, optimizer, data(64, seed=step)))
    assert hook_counts(model, optimizer) == (0, 0, 1)  # the capture hook removed itself
    assert [r["step"] for r in records(watch, "activation") if r["layer"] == "1"] == [5, 10]
    assert all("monitor_loss" not in r for r in records(watch, "probe"))
    watch.close()


@pytest.mark.parametrize("with_optimizer", [True, False])
def test_step_after_close_raises_and_records_nothing(with_optimizer: bool) -> None:
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with monitor.watch(model, optimizer if with_optimizer else None, monitor_data=data()) as watch:
        watch.step(sgd_step(model, optimizer, data(32)))
    loss = sgd_step(model, optimizer, data(32))
    with pytest.raises(RuntimeError, match=r"after close\(\).*make a new watch"):
        watch.step(loss)
    assert watch.num_steps == 1
    assert watch.history.loss.steps == [1]


def test_a_second_step_call_for_one_optimizer_step_warns_once() -> None:
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    watch = monitor.watch(model, optimizer, monitor_data=data())
    loss = sgd_step(model, optimizer, data(32))
    watch.step(loss)
    with pytest.warns(UserWarning, match=r"no optimizer\.step\(\) ran since the previous"):
        watch.step(loss)
    for _ in range(3):  # once: the next ones pass (pytest makes a second warning an error)
        loss = sgd_step(model, optimizer, data(32))
        watch.step(loss)
        watch.step(loss)
    assert watch.num_steps == 8  # still counted, as skipped steps
    watch.close()


def test_step_before_the_optimizer_step_warns() -> None:
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    watch = monitor.watch(model, optimizer, monitor_data=data())
    inputs, targets = data(32)
    loss = F.cross_entropy(model(inputs), targets)
    optimizer.zero_grad()
    loss.backward()
    with pytest.warns(UserWarning, match=r"since the watch was made.*after optimizer\.step\(\)"):
        watch.step(loss)
    optimizer.step()
    watch.close()


@pytest.mark.parametrize("zeroed_before_step", [False, True])
def test_steps_that_grad_scaler_skips_do_not_warn(zeroed_before_step: bool) -> None:
    # GradScaler's skipped steps leave non-finite gradients (or none, in a loop that zeroes
    # them right after the step): not the finite gradients of a misplaced step() call.
    # (pytest turns a warning into an error.)
    torch.manual_seed(0)
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127)
    watch = monitor.watch(model, optimizer, monitor_data=data())
    skipped = []
    for step in range(1, 13):
        inputs, targets = data(32, seed=step)
        loss = F.cross_entropy(model(inputs), targets, reduction="sum")  # (overflows)
        scaler.scale(loss).backward()
        scale = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        if scaler.get_scale() < scale:
            skipped.append(step)
        if zeroed_before_step:
            optimizer.zero_grad()
        watch.step(loss)
        if not zeroed_before_step:
            optimizer.zero_grad()
    assert skipped == [1, 2, 3]  # step 1's looks like a step() before optimizer.step()
    assert watch.num_steps == 12
    watch.close()


def test_a_watch_whose_first_probe_fails_says_why_and_leaves_no_hook() -> None:
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    wrong_width = (torch.randn(16, 5), torch.zeros(16).long())
    with pytest.raises(
        ValueError, match=r"cannot run on monitor_data \(inputs of shape \(16, 5\)\)"
    ):
        monitor.watch(model, optimizer, monitor_data=wrong_width)
    assert hook_counts(model, optimizer) == (0, 0, 0)

    class Broken(nn.Module):
        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("Broken on purpose.")

    # An error's own sentence ends in a full stop: quoted once, not as "..".
    with pytest.raises(ValueError, match=r": RuntimeError: Broken on purpose\. Check that"):
        monitor.watch(
            Broken(), optimizer, monitor_data=(torch.randn(16, 8), torch.zeros(16).long())
        )


def test_a_bad_monitoring_pair_is_shown_by_its_shapes_not_its_values() -> None:
    # The message printed both tensors whole (up to 1,000 values each).
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="monitor_data") as info:
        monitor.watch(model, optimizer, monitor_data=(torch.randn(16, 8), torch.zeros(5).long()))
    assert str(info.value) == (
        "The 'monitor_data' parameter of watch must be an (inputs, targets) pair of tensors of "
        "equal length, a Dataset, or None. Got (<tensor of shape (16, 8), float32>, "
        "tensor([0, 0, 0, 0, 0])) instead."
    )


@pytest.mark.parametrize("targets_shape", [(64,), (64, 1)])
def test_a_class_loss_on_one_output_is_refused(targets_shape: tuple[int, ...]) -> None:
    # A regression watched with the default "cross_entropy": over one output it is 0
    # whatever the weights (with (64,) targets torch refuses float targets instead).
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batch = (torch.randn(64, 8), torch.randn(targets_shape))
    with torch.no_grad():
        assert float(F.cross_entropy(model(batch[0]), batch[1].reshape(64, 1))) == 0.0
    with pytest.raises(ValueError, match="loss_fn"):
        monitor.watch(model, optimizer, monitor_data=batch)
    assert hook_counts(model, optimizer) == (0, 0, 0)
    watch = monitor.watch(model, optimizer, monitor_data=batch, loss_fn="mse")
    (probe,) = records(watch, "probe", 0)
    with torch.no_grad():
        expected = F.mse_loss(model(batch[0]).reshape(targets_shape), batch[1])
    assert probe["monitor_loss"] == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize("captured", [False, True])
def test_a_model_cast_to_float64_after_the_watch_is_probed_in_float64(captured: bool) -> None:
    torch.manual_seed(0)
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    inputs, targets = data()
    given = None if captured else (inputs, targets)
    watch = monitor.watch(
        model, optimizer, monitor_data=given, validation_data=data(64, 1), every=4
    )
    sgd_step(model, optimizer, (inputs, targets))  # (captures the inputs, in float32)
    watch.step(1.0)
    model.double()
    for _ in range(2, 5):
        watch.step(sgd_step(model, optimizer, (inputs.double(), targets)))
    with torch.no_grad():  # the probe at step 4 saw the float64 weights, as this does
        scores = model(inputs.double())
        hidden = torch.relu(model[0](inputs.double()))
    (probe,) = records(watch, "probe", 4)
    if not captured:
        assert probe["monitor_loss"] == pytest.approx(float(F.cross_entropy(scores, targets)))
    (layer,) = [r for r in records(watch, "activation", 4) if r["layer"] == "1"]
    assert layer["mean"] == pytest.approx(float(hidden.mean()), rel=1e-6)
    assert layer["dead_fraction"] == float((hidden <= 0).all(0).double().mean())


def test_a_compiled_model_is_probed_without_recompiling_it() -> None:
    # Each probe's temporary hooks made the compiled forward recompile (seconds each with
    # the default backend); the probes run the module that torch.compile wrapped.
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = small_model()
    compiled = torch.compile(model, backend="eager")
    optimizer = torch.optim.SGD(compiled.parameters(), lr=0.1)
    watch = monitor.watch(compiled, optimizer, monitor_data=data(), every=2)
    for step in range(6):
        watch.step(sgd_step(compiled, optimizer, data(32, seed=step)))
    assert counters["stats"]["unique_graphs"] == 1  # the training forward's graph only
    with torch.no_grad():
        hidden = torch.relu(model[0](data()[0]))
    (layer,) = [r for r in records(watch, "activation", 6) if r["layer"] == "_orig_mod.1"]
    assert layer["dead_fraction"] == float((hidden <= 0).all(0).double().mean())
    assert layer["mean"] == pytest.approx(float(hidden.mean()), rel=1e-6)
    torch._dynamo.reset()


# -- findings ------------------------------------------------------------------------------


def test_each_kind_is_reported_once_and_step_returns_it_when_first_raised() -> None:
    torch.manual_seed(0)
    model = small_model()
    with torch.no_grad():
        model[0].bias[:12] = -100.0  # 12 of the 16 first-layer units dead
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    raised = []
    with monitor.watch(model, optimizer, monitor_data=data(), every=5) as watch:
        for step in range(1, 41):
            for finding in watch.step(sgd_step(model, optimizer, data(32))):
                raised.append((step, finding.kind))
    assert raised == [(5, Finding.DEAD_UNITS)]  # probes at 0 and 5: two in a row
    assert [f.kind for f in watch.findings()] == [Finding.DEAD_UNITS]


def test_a_nan_is_reported_at_its_step_with_the_layer_where_it_starts() -> None:
    torch.manual_seed(0)
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    raised = {}
    with monitor.watch(model, optimizer, monitor_data=data()) as watch:
        for step in range(1, 16):
            if step == 13:
                with torch.no_grad():
                    model[2].weight[0, 0] = float("inf")
            for finding in watch.step(sgd_step(model, optimizer, data(32))):
                raised[finding.kind] = (step, finding)
    step, finding = raised[Finding.NONFINITE_LOSS]
    assert step == 13
    assert finding.step == 13
    assert finding.evidence["layer"] == "2.weight"  # found before the update spread it
    assert finding.evidence["first_nonfinite_activation"] == "2 (Linear)"


def test_observed_epoch_metrics_feed_the_overfitting_detector() -> None:
    model = small_model()
    watch = monitor.watch(model)
    raised = []
    for epoch, val_loss in enumerate([0.6, 0.55, 0.56, 0.7, 0.8]):
        watch.step(1.0 / (epoch + 1))
        metrics = {"train_loss": 0.5 / (epoch + 1), "train_accuracy": 1.0, "val_loss": val_loss}
        for finding in watch.observe({**metrics, "val_accuracy": 0.8}, step=30 * (epoch + 1)):
            raised.append((epoch, finding.kind))
    # The validation loss is 5% above its best at two evaluations in a row from epoch 4.
    assert raised == [(4, Finding.OVERFITTING)]
    assert len(records(watch, "epoch")) == 5


# -- the Trainer, checkpoints ------------------------------------------------------------------


def test_the_trainer_callback_counts_optimizer_steps_and_epochs() -> None:
    data_splits = load_dataset("spirals", seed=0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 3))
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    inputs, targets = data_splits.train.inputs, data_splits.train.targets
    watch = monitor.watch(model, optimizer, monitor_data=(inputs, targets), every=10)
    trainer = Trainer(
        model,
        optimizer,
        data_splits,
        batch_size=32,
        epochs=3,
        callbacks=[watch.callback()],
        progress=False,
    )
    result = trainer.fit()
    assert watch.num_steps == result.steps == 21
    epochs = records(watch, "epoch")
    assert [r["step"] for r in epochs] == [7, 14, 21]
    assert watch.history.val_accuracy.values == [r["val_accuracy"] for r in epochs]
    assert [r["step"] for r in records(watch, "probe")] == [0, 10, 20]


def test_the_state_round_trips_through_a_weights_only_checkpoint() -> None:
    torch.manual_seed(0)
    model = small_model()
    with torch.no_grad():
        model[0].bias.fill_(-100.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    watch = monitor.watch(model, optimizer, monitor_data=data(), every=5)
    for _ in range(12):
        watch.step(sgd_step(model, optimizer, data(32)))
    buffer = io.BytesIO()
    torch.save(watch.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    restored = monitor.watch(model, optimizer, monitor_data=data(), every=5)
    restored.load_state_dict(state)
    assert restored.num_steps == 12
    assert restored.records() == watch.records()
    assert restored.findings() == watch.findings()
    assert restored.histograms() == watch.histograms()
    assert restored.history == watch.history
    restored.step(sgd_step(model, optimizer, data(32)))
    assert restored.num_steps == 13


def captured_run(
    resume: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> tuple[monitor.Watch, nn.Sequential]:
    """10 SGD steps of small_model on ``data(64, seed=step)``, watched without monitoring
    data (the watch keeps the first inputs the model sees) and probed at steps 5 and 10.
    With ``resume``, the watch is saved after step 5 and a new one loads ``resume(state)``
    (through a weights-only checkpoint) and goes on."""
    torch.manual_seed(0)
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    watch = monitor.watch(model, optimizer, every=5)
    for step in range(10):
        if step == 5 and resume is not None:
            buffer = io.BytesIO()
            torch.save(resume(watch.state_dict()), buffer)
            watch.close()
            buffer.seek(0)
            watch = monitor.watch(model, optimizer, every=5)
            watch.load_state_dict(torch.load(buffer, weights_only=True))
        watch.step(sgd_step(model, optimizer, data(64, seed=step)))
    watch.close()
    return watch, model


def probed_mean(watch: monitor.Watch, step: int) -> float:
    """The mean of the first ReLU's outputs at the probe of ``step``."""
    (layer,) = [r for r in records(watch, "activation", step) if r["layer"] == "1"]
    return float(layer["mean"])


def first_relu_mean(model: nn.Sequential, inputs: torch.Tensor) -> float:
    with torch.no_grad():
        return float(torch.relu(model[0](inputs)).mean())


def test_a_resumed_watch_probes_on_the_inputs_it_captured_before() -> None:
    uninterrupted, _ = captured_run()
    resumed, model = captured_run(lambda state: state)
    first_inputs = data(64, seed=0)[0]
    assert probed_mean(resumed, 10) == pytest.approx(first_relu_mean(model, first_inputs))
    assert probed_mean(resumed, 10) == probed_mean(uninterrupted, 10)
    # The loaded watch waits for no inputs: its capture hook is gone.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    watch = monitor.watch(model, optimizer)
    watch.step(sgd_step(model, optimizer, data(64)))
    watch.close()
    restored = monitor.watch(model, optimizer)
    assert hook_counts(model, optimizer) == (0, 1, 1)
    restored.load_state_dict(watch.state_dict())
    assert hook_counts(model, optimizer) == (0, 0, 1)
    restored.close()


def test_a_state_without_captured_inputs_still_loads_and_captures_anew() -> None:
    # A checkpoint saved before the captured inputs were: the resumed watch keeps the
    # first inputs it sees (step 6's), as it did then.
    def saved_before(state: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in state.items() if key != "captured_inputs"}

    resumed, model = captured_run(saved_before)
    assert resumed.num_steps == 10
    step_6_inputs = data(64, seed=5)[0]
    assert probed_mean(resumed, 10) == pytest.approx(first_relu_mean(model, step_6_inputs))


def test_given_monitoring_data_is_not_saved_and_wins_over_captured_inputs() -> None:
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with monitor.watch(model, optimizer, monitor_data=data()) as given:
        given.step(sgd_step(model, optimizer, data(32)))
    assert "captured_inputs" not in given.state_dict()
    with monitor.watch(model, optimizer) as captured:
        captured.step(sgd_step(model, optimizer, data(32, seed=1)))
    state = captured.state_dict()
    assert torch.equal(state["captured_inputs"], data(32, seed=1)[0])
    resumed = monitor.watch(model, optimizer, monitor_data=data(), every=2)
    resumed.load_state_dict(state)
    resumed.step(sgd_step(model, optimizer, data(32, seed=2)))
    (probe,) = records(resumed, "probe", 2)
    inputs, targets = data()
    with torch.no_grad():
        expected = float(F.cross_entropy(model(inputs), targets))
    assert probe["monitor_loss"] == pytest.approx(expected)
    resumed.close()


def warmup_run(
    steps: int, warmup: int, *, lr: float = 0.5, stop_after: int | None = None
) -> tuple[monitor.Watch, list[float]]:
    """SGD on small_model under a linear warmup from 0 over ``warmup`` steps (torch's
    LambdaLR); returns the watch and the rate each step was made at. With ``stop_after``,
    the watch is saved after that step and a new one loaded from it goes on."""
    torch.manual_seed(0)
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: min(t / warmup, 1.0))
    watch = monitor.watch(model, optimizer, monitor_data=data(64, seed=1))
    rates = []
    for step in range(1, steps + 1):
        rates.append(optimizer.param_groups[0]["lr"])
        loss = sgd_step(model, optimizer, data(32, seed=step))
        scheduler.step()
        watch.step(loss)
        if step == stop_after:
            state = watch.state_dict()
            watch.close()
            watch = monitor.watch(model, optimizer, monitor_data=data(64, seed=1))
            watch.load_state_dict(state)
    return watch, rates


def test_each_measured_update_records_the_rate_that_made_it() -> None:
    watch, rates = warmup_run(25, warmup=20)
    # Step 1 (rate 0) moves nothing, so step 2, the first with a positive rate, is
    # measured too; then the cadence's every 10 steps. At rate 0 the optimizer steps no
    # weight: step 1 has gradient norms but no update ratios (nor a rate).
    measured = [r["step"] for r in records(watch, "gradients")]
    assert measured == [1, 2, 10, 20]
    history = watch.history
    assert history.step_learning_rate.steps == [2, 10, 20]
    assert history.step_learning_rate.values == pytest.approx([rates[s - 1] for s in (2, 10, 20)])
    assert history.learning_rate == 0.5  # the configured rate, not the warmup's first
    assert all("update_ratio" not in r for r in records(watch, "weight", 1))
    assert len(records(watch, "weight", 1)) == 3
    assert all(r["update_ratio"] > 0 for r in records(watch, "weight", 2))


def test_a_schedule_inside_a_gradwise_optimizer_is_read_as_a_scheduler_is() -> None:
    # The same warmup as warmup_run's, as gradwise's SGD(lr=linear_warmup(...)): the
    # group's lr is the schedule object, evaluated at the group's step count. The watch
    # measures the same steps, records the same rates and the same update ratios.
    from gradwise.schedules import constant, linear_warmup

    expected, rates = warmup_run(25, warmup=20)
    torch.manual_seed(0)
    model = small_model()
    schedule = linear_warmup(constant(0.5), num_steps=20)
    optimizer = optim.SGD(model.parameters(), lr=schedule)
    watch = monitor.watch(model, optimizer, monitor_data=data(64, seed=1))
    for step in range(1, 26):
        watch.step(sgd_step(model, optimizer, data(32, seed=step)))
    assert [r["step"] for r in records(watch, "gradients")] == [1, 2, 10, 20]
    history = watch.history
    assert history.step_learning_rate.steps == [2, 10, 20]
    assert history.step_learning_rate.values == pytest.approx([rates[s - 1] for s in (2, 10, 20)])
    assert history.step_learning_rate.values == pytest.approx(
        expected.history.step_learning_rate.values
    )
    ratios = [r["update_ratio"] for r in records(watch, "weight", 10)]
    assert ratios == pytest.approx([r["update_ratio"] for r in records(expected, "weight", 10)])


def test_without_a_warmup_no_extra_step_is_measured() -> None:
    torch.manual_seed(0)
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    plain = monitor.watch(model, optimizer, monitor_data=data(64, seed=1))
    for step in range(1, 26):
        plain.step(sgd_step(model, optimizer, data(32, seed=step)))
    assert [r["step"] for r in records(plain, "gradients")] == [1, 10, 20]


def test_a_resumed_watch_still_measures_the_first_moving_update() -> None:
    uninterrupted, _ = warmup_run(12, warmup=20)
    resumed, _ = warmup_run(12, warmup=20, stop_after=1)
    assert [r["step"] for r in records(resumed, "gradients")] == [1, 2, 10]
    assert resumed.history == uninterrupted.history


def test_the_first_update_ratio_is_taken_at_the_configured_rate() -> None:
    # The ratio of step 2 (made at 1/50 of the rate) scaled back to the full rate, against
    # the ratio of the same step made at the full rate: SGD's update is the rate times the
    # gradient, so the two agree exactly.
    from gradwise.monitor._detectors import first_update_ratio

    watch, rates = warmup_run(2, warmup=50)
    assert rates == [0.0, 0.5 / 50]
    torch.manual_seed(0)
    model = small_model()  # step 1 (rate 0) left the weights where they started
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    sgd_step(model, torch.optim.SGD(model.parameters(), lr=0.5), data(32, seed=2))
    ratios = [
        float((p.detach() - before[n]).norm() / before[n].norm())
        for n, p in model.named_parameters()
        if n.endswith("weight")
    ]
    assert first_update_ratio(watch.history) == pytest.approx(sorted(ratios)[1], rel=1e-4)


@pytest.mark.parametrize("kind", ["torch", "gradwise"])
def test_rmsprops_first_update_ratio_is_taken_at_its_filled_average(kind: str) -> None:
    # RMSprop's average of squares starts at 0 without bias correction: step 1 divides by
    # sqrt(1 - alpha) |g|, a step 10x its later size at alpha 0.99. The oracle is the same
    # step with alpha 0, whose average is g^2 at once: the size a filled average gives.
    from gradwise.monitor._detectors import first_update_ratio

    make = torch.optim.RMSprop if kind == "torch" else optim.RMSprop
    torch.manual_seed(0)
    model = small_model()
    watch = monitor.watch(model, make(model.parameters(), lr=0.01), monitor_data=data(64))
    watch.step(sgd_step(model, watch.optimizer, data(32, seed=1)))
    assert watch.history.step_size_bias.values == [pytest.approx(10.0)]
    torch.manual_seed(0)
    model = small_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    sgd_step(model, torch.optim.RMSprop(model.parameters(), lr=0.01, alpha=0.0), data(32, seed=1))
    ratios = [
        float((p.detach() - before[n]).norm() / before[n].norm())
        for n, p in model.named_parameters()
        if n.endswith("weight")
    ]
    assert first_update_ratio(watch.history) == pytest.approx(sorted(ratios)[1], rel=1e-4)


def test_only_rmsprops_start_is_recorded_as_inflated() -> None:
    torch.manual_seed(0)
    model = small_model()
    watch = monitor.watch(model, torch.optim.Adam(model.parameters(), lr=0.01))
    watch.step(sgd_step(model, watch.optimizer, data(32, seed=1)))
    assert len(watch.history.step_learning_rate) == 1
    assert len(watch.history.step_size_bias) == 0


# -- argument checks -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("every", 0, "an int >= 1"),
        ("cheap_every", 2.5, "an int >= 1"),
        ("num_bins", -3, "an int >= 1"),
        ("histograms", "yes", "a bool"),
        ("loss_fn", "l2", "one of 'cross_entropy', 'hinge', 'mse'"),
        ("monitor_data", torch.zeros(3), "an (inputs, targets) pair"),
        ("validation_data", (torch.zeros(3, 8), torch.zeros(2)), "an (inputs, targets) pair"),
        ("thresholds", {"dead_fraction": 0.5}, "a Thresholds"),
    ],
)
def test_bad_arguments_raise_the_standard_error(name: str, value: object, expected: str) -> None:
    pattern = rf"^The '{name}' parameter of watch must be {re.escape(expected)}.*Got .* instead\.$"
    with pytest.raises(ValueError, match=re.compile(pattern, re.DOTALL)):
        monitor.watch(small_model(), **{name: value})


def test_a_model_and_an_optimizer_are_checked() -> None:
    with pytest.raises(
        ValueError, match="The 'model' parameter of watch must be a torch nn.Module"
    ):
        monitor.watch("model")  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match="The 'optimizer' parameter of watch must be a torch Optimizer"
    ):
        monitor.watch(small_model(), "adam")  # type: ignore[arg-type]


def test_step_takes_a_number_or_a_one_element_tensor() -> None:
    watch = monitor.watch(small_model())
    with pytest.raises(ValueError, match="The 'loss' parameter of Watch.step must be a number"):
        watch.step(torch.ones(3))
    watch.step(torch.tensor(2.0))
    watch.step(1.5)
    assert watch.history.loss.values == [2.0, 1.5]


@pytest.mark.parametrize("name", list(Thresholds.__dataclass_fields__))
def test_every_threshold_is_checked(name: str) -> None:
    with pytest.raises(ValueError, match=rf"^The '{name}' parameter of Thresholds must be"):
        Thresholds(**{name: -1})


@pytest.mark.parametrize("name", ["loss_rise", "update_ratio_high", "exploding_ratio"])
def test_an_infinite_threshold_is_refused(name: str) -> None:
    message = f"The '{name}' parameter of Thresholds must be a finite float > 0. Got inf instead."
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        Thresholds(**{name: math.inf})


def test_observe_takes_a_mapping() -> None:
    watch = monitor.watch(small_model())
    with pytest.raises(
        ValueError, match="The 'metrics' parameter of Watch.observe must be a mapping"
    ):
        watch.observe([0.5, 0.9])  # type: ignore[arg-type]


def test_observe_takes_numbers_and_one_element_tensors_and_refuses_the_rest() -> None:
    watch = monitor.watch(small_model())
    watch.step(1.0)
    watch.observe({"val_loss": torch.tensor(0.5), "val_accuracy": 0.75, "epochs": 1})
    (epoch,) = records(watch, "epoch")
    assert epoch == {"kind": "epoch", "step": 1, "val_loss": 0.5, "val_accuracy": 0.75, "epochs": 1}
    assert watch.history.val_loss.values == [0.5]
    message = (
        r"^The 'metrics' parameter of Watch.observe must be a mapping of metric names to "
        r"numbers or 1-element tensors\. Got \{'val_loss': .*\} instead\.$"
    )
    for value in (torch.ones(2), "0.5", None, True):
        with pytest.raises(ValueError, match=re.compile(message, re.DOTALL)):
            watch.observe({"train_loss": 0.4, "val_loss": value})
    assert len(records(watch, "epoch")) == 1  # nothing of the refused calls is kept
    assert watch.history.train_loss.values == []


def test_monitoring_targets_with_cross_entropys_ignore_index_are_accepted() -> None:
    # QA: labels of -100 (left out by cross_entropy) made watch() fail in bincount with
    # "RuntimeError: bincount only supports 1-d non-negative integral inputs".
    torch.manual_seed(0)
    inputs, targets = torch.randn(8, 4), torch.tensor([0, 0, 0, 1, -100, -100, -100, -100])
    w = monitor.watch(nn.Linear(4, 2), monitor_data=(inputs, targets))
    assert w.history.chance_accuracy == 0.75  # the majority class among the kept labels


def test_a_blow_up_before_the_first_measurement_is_named_at_the_epoch_end() -> None:
    # 6 steps of a loss climbing from 1.15 to 1e21 (SGD at lr 1e3), fewer than
    # cheap_every: no measurement ran, and the run ended with no finding.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e3)
    generator = torch.Generator().manual_seed(0)
    inputs, targets = torch.randn(64, 2, generator=generator), torch.arange(64) % 3
    watch = monitor.watch(model, optimizer, monitor_data=(inputs, targets), cheap_every=10)
    losses = []
    for _ in range(6):
        losses.append(float(sgd_step(model, optimizer, (inputs, targets)).detach()))
        assert watch.step(losses[-1]) == []
    assert max(losses) > 1e6 * losses[0]
    assert watch.findings() == []
    raised = watch.observe({"train_loss": losses[-1]})
    assert [finding.kind for finding in raised] == [Finding.LEARNING_RATE_TOO_HIGH]


def test_an_optimizer_of_another_model_is_refused() -> None:
    # It was accepted: the watch then recorded no weight or update ratio, silently.
    model, other = nn.Linear(2, 3), nn.Linear(2, 3)
    with pytest.raises(ValueError, match="none of them the model's"):
        monitor.watch(model, torch.optim.SGD(other.parameters(), lr=0.1))
    part = torch.optim.SGD([model.weight], lr=0.1)  # a part of the model: fine
    assert monitor.watch(model, part).optimizer is part


def test_a_non_finite_validation_loss_is_a_non_finite_loss_finding() -> None:
    # At SGD lr 1e6 the training loss stayed finite (1e25) while the validation loss was
    # NaN, and nothing was raised for it.
    model = nn.Linear(2, 3)
    watch = monitor.watch(model, monitor_data=(torch.randn(8, 2), torch.arange(8) % 3))
    watch.step(1.1)
    assert watch.observe({"train_loss": 1.1, "val_loss": 1.0}) == []
    watch.step(1.2)
    raised = watch.observe({"train_loss": 1.2, "val_loss": float("nan")})
    assert [finding.kind for finding in raised] == [Finding.NONFINITE_LOSS]
    assert raised[0].summary.startswith("the validation loss became NaN or infinite at step 2")
