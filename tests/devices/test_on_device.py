"""The device-facing features on every device this machine has, against device-free oracles.

Each test runs on the CPU and, where there is one, on the GPU, and checks what holds on any
device: torch.optim or the paper's update rule in float64 on the CPU, the exact Hessian,
histograms and norms recomputed from host copies, losses recomputed by hand, and the model
left exactly as found. Float32 tolerances are float32's own: TF32 is off in this module.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradwise import Finding, curvature, monitor, optim
from gradwise.checks import gradcheck
from gradwise.config import load_config
from gradwise.landscape import interpolate
from gradwise.lr_finder import lr_find
from gradwise.runs import read_records, read_summary
from gradwise.train import load_checkpoint, make_trainer, prepare_run, resume, train
from tests.curvature.models import classification_batch, cross_entropy, exact_hessian
from tests.optim.test_paper_optimizers import ReferenceLAMB
from tests.train.conftest import SMALL_RUN
from tests.train.stop_at import StopAt

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# float32 on the device against float64 on the CPU, fed the same gradients: 10 steps of
# about 1e-2 each, so any error in the rule itself is 1e-4 or more.
FLOAT32_RTOL, FLOAT32_ATOL = 1e-5, 1e-6


@pytest.fixture(autouse=True)
def _no_tf32() -> Iterator[None]:
    """Full float32 matmuls and convolutions on the GPU (TF32 keeps 10 mantissa bits).

    Through ``fp32_precision``: torch 2.9 deprecated the ``allow_tf32`` flags (they can warn
    so), and this suite turns warnings into errors.
    """
    matmul, convolution = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    saved = matmul.fp32_precision, convolution.fp32_precision
    matmul.fp32_precision = convolution.fp32_precision = "ieee"
    yield
    matmul.fp32_precision, convolution.fp32_precision = saved


def _batch(count: int, seed: int, features: int = 8) -> tuple[Tensor, Tensor]:
    """Float32 inputs on the CPU and three classes that depend on them."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(count, features, generator=generator)
    return inputs, (inputs[:, 0] > 0).long() + (inputs[:, 1] > 1).long()


def _grad(parameter: Tensor) -> Tensor:
    assert parameter.grad is not None
    return parameter.grad


def _rng_states() -> list[Tensor]:
    cuda = [torch.cuda.get_rng_state()] if torch.cuda.is_initialized() else []
    return [torch.get_rng_state(), *cuda]


def _snapshot(model: nn.Module) -> dict[str, Any]:
    """Everything a feature that promises to leave the model alone must leave alone."""
    return {
        "objects": [id(t) for t in (*model.parameters(), *model.buffers())],
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "grads": {
            n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()
        },
        "modes": [m.training for m in model.modules()],
        "rng": _rng_states(),
    }


def _assert_same(actual: Any, expected: Any, path: str = "") -> None:
    """Equal nested containers; tensors bit for bit, in the same dtype and on the same device."""
    if isinstance(expected, Tensor):
        assert isinstance(actual, Tensor), path
        assert (actual.dtype, actual.device) == (expected.dtype, expected.device), path
        assert torch.equal(actual, expected), path
    elif isinstance(expected, dict):
        assert isinstance(actual, dict), path
        assert actual.keys() == expected.keys(), path
        for key in expected:
            _assert_same(actual[key], expected[key], f"{path}[{key!r}]")
    elif isinstance(expected, list | tuple):
        assert len(actual) == len(expected), path
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _assert_same(a, e, f"{path}[{index}]")
    else:
        assert actual == expected, path


def _assert_unchanged(model: nn.Module, before: dict[str, Any]) -> None:
    _assert_same(_snapshot(model), before)


# -- gradwise.optim ------------------------------------------------------------------------


class _TorchReference:
    """A torch.optim optimizer over float64 CPU copies, stepped on gradients it is given."""

    def __init__(self, cls: type[torch.optim.Optimizer], params: list[Tensor], **kwargs: Any):
        self.params = [nn.Parameter(p) for p in params]
        self.optimizer = cls(self.params, foreach=False, **kwargs)  # type: ignore[call-arg]

    def step(self, grads: list[Tensor]) -> None:
        for p, g in zip(self.params, grads, strict=True):
            p.grad = g
        self.optimizer.step()

    def state(self, index: int) -> dict[str, Any]:
        return self.optimizer.state[self.params[index]]


class _PaperLAMB(ReferenceLAMB):
    """tests/optim's LAMB (You et al. 2020, Algorithm 2) at a fixed learning rate."""

    def __init__(self, params: list[Tensor], lr: float, weight_decay: float) -> None:
        super().__init__(params, betas=(0.9, 0.999), eps=1e-6, weight_decay=weight_decay)
        self.lr = lr

    def step(self, grads: list[Tensor], lr: float | None = None) -> None:
        super().step(grads, self.lr if lr is None else lr)


# name: (gradwise class, torch.optim class or None for the paper's rule, hyperparameters)
Hyperparameters = dict[str, Any]
OPTIMIZERS: dict[
    str, tuple[type[optim.Optimizer], type[torch.optim.Optimizer] | None, Hyperparameters]
] = {
    "Adam": (optim.Adam, torch.optim.Adam, {"lr": 1e-2, "weight_decay": 1e-2}),
    "AdamW": (optim.AdamW, torch.optim.AdamW, {"lr": 1e-2, "weight_decay": 0.1}),
    "SGD-Nesterov": (
        optim.SGD,
        torch.optim.SGD,
        {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
    ),
    "LAMB": (optim.LAMB, None, {"lr": 0.01, "weight_decay": 0.01}),
    # torch has no fused Adagrad for CUDA: "auto" runs its foreach kernel there, with CPU
    # stand-ins for the step counters where lr_decay is 0.
    "Adagrad": (optim.Adagrad, torch.optim.Adagrad, {"lr": 0.05, "lr_decay": 1e-3}),
    "Adagrad-no-decay": (optim.Adagrad, torch.optim.Adagrad, {"lr": 0.05}),
    # torch's foreach kernels on a GPU (not its capturable ones: in float32, RAdam's
    # rectification there was 5e-3 off this oracle on an H100).
    "NAdam": (optim.NAdam, torch.optim.NAdam, {"lr": 1e-2, "weight_decay": 1e-2}),
    "RAdam": (optim.RAdam, torch.optim.RAdam, {"lr": 1e-2, "weight_decay": 1e-2}),
    "RMSprop": (optim.RMSprop, torch.optim.RMSprop, {"lr": 1e-2, "momentum": 0.9}),
    "Adadelta": (optim.Adadelta, torch.optim.Adadelta, {"lr": 1.0, "weight_decay": 1e-2}),
}


@pytest.mark.parametrize("implementation", ["auto", "reference"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("device", DEVICES)
def test_optimizers_match_their_oracle_in_float64_on_the_same_gradients(
    device: str, name: str, implementation: optim.Implementation
) -> None:
    cls, torch_cls, hyperparameters = OPTIMIZERS[name]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3)).to(device)
    optimizer = cls(model.parameters(), implementation=implementation, **hyperparameters)
    copies = [p.detach().cpu().double() for p in model.parameters()]
    reference: _TorchReference | _PaperLAMB = (
        _TorchReference(torch_cls, copies, **hyperparameters)
        if torch_cls is not None
        else _PaperLAMB(copies, **hyperparameters)
    )
    for step in range(10):
        inputs, targets = _batch(32, seed=step)
        optimizer.zero_grad()
        F.cross_entropy(model(inputs.to(device)), targets.to(device)).backward()
        reference.step([_grad(p).cpu().double() for p in model.parameters()])
        optimizer.step()
    # "auto" is the fast path where torch has a fused kernel for the device, as on cuda.
    fused = implementation == "auto" and type(optimizer).has_fused_kernel
    assert optimizer.last_implementations == ["fused" if fused else "reference"]
    for index, (mine, expected) in enumerate(
        zip(model.parameters(), reference.params, strict=True)
    ):
        assert mine.device.type == device
        torch.testing.assert_close(
            mine.cpu().double(), expected, rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL
        )
        expected_state = reference.state(index)
        for key, value in optimizer.state[mine].items():
            if isinstance(value, Tensor) and value.dim() > 0:
                assert value.device == mine.device, key
            torch.testing.assert_close(
                torch.as_tensor(value).cpu().double(),
                torch.as_tensor(expected_state[key]).double(),
                rtol=FLOAT32_RTOL,
                atol=FLOAT32_ATOL,
                msg=key,
            )


@pytest.mark.parametrize("device", DEVICES)
def test_a_state_dict_saved_on_the_cpu_continues_on_the_device(device: str) -> None:
    # A checkpoint is saved on the CPU; torch's load_state_dict leaves the step counters
    # there, and torch's fused kernels refuse them on a GPU.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))
    optimizer = optim.AdamW(model.parameters(), lr=1e-2)
    twin = copy.deepcopy(model).to(device)
    twin_optimizer = optim.AdamW(twin.parameters(), lr=1e-2)
    for step in range(6):
        if step == 3:
            twin.load_state_dict(model.state_dict())
            twin_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))  # as saved
        inputs, targets = _batch(32, seed=step)
        for net, opt in ((model, optimizer), (twin, twin_optimizer)):
            opt.zero_grad()
            F.cross_entropy(net(inputs.to(_device_of(net))), targets.to(_device_of(net))).backward()
            opt.step()
    assert twin_optimizer.last_implementations == optimizer.last_implementations == ["fused"]
    for mine, expected in zip(twin.parameters(), model.parameters(), strict=True):
        assert twin_optimizer.state[mine]["step"].device == mine.device
        torch.testing.assert_close(
            mine.detach().cpu(), expected.detach(), rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL
        )


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# -- gradwise.curvature --------------------------------------------------------------------


def _float64_mlp_and_exact_hessian(
    device: str,
) -> tuple[nn.Module, tuple[Tensor, Tensor], Tensor, dict[str, Any]]:
    """A float64 MLP with batch norm on the device, its data, the exact Hessian on the CPU
    (by torch.func.hessian, eval mode), and a snapshot taken with a .grad on every parameter."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3)).double()
    inputs, targets = classification_batch(num_samples=32, num_features=4, num_classes=3)
    model(inputs)  # moves batch norm's running statistics off their initial values
    exact = exact_hessian(model, cross_entropy, inputs, targets)
    model.to(device)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    return model, (inputs.to(device), targets.to(device)), exact, _snapshot(model)


@pytest.mark.parametrize("device", DEVICES)
def test_top_eigenvalues_and_max_stable_lr_equal_the_exact_hessians(device: str) -> None:
    model, data, exact, before = _float64_mlp_and_exact_hessian(device)
    expected = torch.linalg.eigvalsh(exact).flip(0)
    for k in (1, 2, 3):
        values = curvature.eigenvalues(model, cross_entropy, data, k=k, tol=1e-10)
        assert values.device.type == device
        torch.testing.assert_close(values.cpu(), expected[:k], rtol=1e-8, atol=1e-10)
    bound = curvature.max_stable_lr(model, cross_entropy, data, tol=1e-10)
    assert bound == pytest.approx(2 / float(expected[0]), rel=1e-8)
    _assert_unchanged(model, before)


@pytest.mark.parametrize("device", DEVICES)
def test_hessian_trace_equals_the_exact_hessians(device: str) -> None:
    model, data, exact, before = _float64_mlp_and_exact_hessian(device)
    # Hutch++ with 3n products sketches all n directions: the estimate is exact.
    num_probes = 3 * exact.shape[0]
    total = curvature.trace(model, cross_entropy, data, num_probes=num_probes, method="hutch++")
    assert total == pytest.approx(float(exact.trace()), rel=1e-8)
    _assert_unchanged(model, before)


# -- gradwise.monitor ----------------------------------------------------------------------

WEIGHTS = ("0.weight", "3.weight", "5.weight")


def _train_relu_model(
    device: str, watched: bool
) -> tuple[nn.Sequential, monitor.Watch | None, dict[int, dict[str, Tensor]], Tensor]:
    """Four Adam steps (dropout draws from the device's generator), watched or not."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)
    ).to(device)
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    monitor_inputs, monitor_targets = _batch(64, seed=100)
    watch = None
    if watched:
        watch = monitor.watch(
            model, optimizer, monitor_data=(monitor_inputs, monitor_targets), every=1, cheap_every=1
        )
    grads = {}
    for step in range(1, 5):
        inputs, targets = _batch(32, seed=step)
        loss = F.cross_entropy(model(inputs.to(device)), targets.to(device))
        optimizer.zero_grad()
        loss.backward()
        grads[step] = {n: _grad(p).cpu() for n, p in model.named_parameters()}
        optimizer.step()
        if watch is not None:
            watch.step(loss)
    return model, watch, grads, monitor_inputs


def _assert_histc_counts(histogram: monitor.Histogram, values: Tensor) -> None:
    low, high = float(values.min()), float(values.max())
    expected = torch.histc(values, len(histogram.counts), low, high)
    assert histogram.counts == [int(count) for count in expected.tolist()]
    assert (histogram.edges[0], histogram.edges[-1]) == (low, high)
    assert histogram.total == histogram.values == values.numel()


@pytest.mark.parametrize("device", DEVICES)
def test_watch_measures_what_a_host_copy_shows_and_leaves_training_bit_identical(
    device: str,
) -> None:
    model, watch, grads, monitor_inputs = _train_relu_model(device, watched=True)
    assert watch is not None
    gradient_histograms = watch.histograms("gradients")
    for step, step_grads in grads.items():
        (record,) = [r for r in watch.records() if r["kind"] == "gradients" and r["step"] == step]
        norm = math.sqrt(sum(float(g.double().pow(2).sum()) for g in step_grads.values()))
        assert record["grad_norm"] == pytest.approx(norm, rel=1e-5)
        assert set(gradient_histograms[step]) == set(WEIGHTS)
        for name in WEIGHTS:
            _assert_histc_counts(gradient_histograms[step][name], step_grads[name].flatten())
    model.eval()
    with torch.no_grad():  # the first ReLU's output on the monitoring subset, after step 4
        relu = model[1](model[0](monitor_inputs.to(device))).cpu()
    model.train()
    _assert_histc_counts(watch.histograms("activations")[4]["1"], relu.flatten())
    watch.close()

    plain, _, _, _ = _train_relu_model(device, watched=False)
    _assert_same(model.state_dict(), plain.state_dict())


# -- gradwise.checks -----------------------------------------------------------------------


class _SquareWithWrongBackward(torch.autograd.Function):
    """x^2 whose backward returns 2 * grad instead of 2 * x * grad."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x * x

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return 2 * grad


class _Square(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return _SquareWithWrongBackward.apply(x)


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_passes_a_correct_model_and_names_a_wrong_backward(device: str) -> None:
    inputs, targets = (t.to(device) for t in _batch(16, seed=0))
    torch.manual_seed(0)
    correct = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3)).to(device)
    F.cross_entropy(correct(inputs), targets).backward()  # a .grad to leave alone
    before = _snapshot(correct)
    report = gradcheck(correct, F.cross_entropy, inputs, targets)
    assert report.passed
    assert report.findings() == []
    assert [row.name for row in report.tensors] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    _assert_unchanged(correct, before)  # float32, on the device: the check ran on a copy

    wrong = nn.Sequential(nn.Linear(8, 8), _Square(), nn.Linear(8, 3)).to(device)
    report = gradcheck(wrong, F.cross_entropy, inputs, targets)
    assert report.verdict == "wrong"
    (finding,) = report.findings()
    assert finding.kind is Finding.WRONG_GRADIENT
    assert finding.evidence["tensors"] == ["0.weight", "0.bias"]  # upstream of the square


# -- gradwise.lr_finder --------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_lr_find_sweeps_on_the_device_and_restores_model_and_optimizer(device: str) -> None:
    torch.manual_seed(0)
    layers = [nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 3)]
    model = nn.Sequential(*layers).to(device)
    optimizer = optim.AdamW(model.parameters(), lr=3e-3)
    batches = [_batch(32, seed) for seed in range(4)]
    for inputs, targets in batches[:2]:  # optimizer state, and a .grad left in place
        optimizer.zero_grad()
        F.cross_entropy(model(inputs.to(device)), targets.to(device)).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():  # the sweep's first loss: batch 0 in training mode, before a step
        first = copy.deepcopy(model).train()(batches[0][0].to(device))
        first_loss = float(F.cross_entropy(first, batches[0][1].to(device)))
    before = _snapshot(model)
    optimizer_state = copy.deepcopy(optimizer.state_dict())

    result = lr_find(model, optimizer, batches, start_lr=1e-4, end_lr=1.0, num_steps=20)
    assert 3 <= len(result.losses) <= 20
    assert result.losses[0] == pytest.approx(first_loss, rel=1e-6)
    assert 1e-4 <= result.suggestion <= 1.0
    _assert_unchanged(model, before)
    _assert_same(optimizer.state_dict(), optimizer_state)


# -- gradwise.landscape --------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_interpolation_equals_losses_computed_by_hand_and_leaves_the_model_alone(
    device: str,
) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    inputs, targets = _batch(64, seed=0)
    model(inputs)  # batch norm's running statistics
    start = copy.deepcopy(model.state_dict())
    # B: the weights moved, the running statistics scaled
    end = {k: start[k] + 0.3 * torch.randn_like(start[k]) for k, _ in model.named_parameters()}
    end |= {k: start[k] * 1.1 for k in ("1.running_mean", "1.running_var")}
    model.to(device)
    before = _snapshot(model)

    line = interpolate(model, start, end, F.cross_entropy, (inputs, targets), num_points=5)
    assert line.coordinates.tolist() == [-0.5, 0.0, 0.5, 1.0, 1.5]
    by_hand = copy.deepcopy(model).cpu().double().eval()
    for alpha, loss in zip(line.coordinates.tolist(), line.losses.tolist(), strict=True):
        # the weights extrapolated, the running statistics held at the nearer end
        point = {
            k: torch.lerp(start[k].double(), end[k].double(),
                          min(max(alpha, 0.0), 1.0) if "running" in k else alpha)
            for k in end
        }  # fmt: skip
        by_hand.load_state_dict(point, strict=False)
        with torch.no_grad():
            expected = F.cross_entropy(by_hand(inputs.double()), targets)
        assert loss == pytest.approx(float(expected), rel=1e-5)
    _assert_unchanged(model, before)


# -- gradwise train ------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_a_configured_run_trains_on_the_device_stops_and_resumes(
    device: str, tmp_path: Path
) -> None:
    config = load_config(
        overrides=[*SMALL_RUN, "epochs=2", "name=run", f"runs_dir={tmp_path}", f"device={device}"]
    )
    stopped = train(config, progress=False, callbacks=[StopAt(step=20)])
    assert stopped.status == "stopped"
    assert stopped.run is not None
    resumed = resume(stopped.run.path, progress=False)
    assert resumed.status == "completed"
    assert resumed.run is not None

    records = read_records(resumed.run)
    steps = [r["step"] for r in records if r["kind"] == "step"]
    assert steps == sorted(set(steps))
    assert steps[0] < 20 < steps[-1]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    summary = read_summary(resumed.run)
    assert summary["status"] == "completed"
    assert torch.device(summary["device"]).type == device

    # The same run uninterrupted, in memory: dropout draws from the device's generator, so
    # the checkpoint must carry that generator's state for the two to end bit-identical.
    whole = prepare_run(config)
    make_trainer(whole, None, progress=False).fit()
    _assert_same(
        load_checkpoint(resumed.run.last_checkpoint)["model"],
        {k: v.cpu() for k, v in whole.model.state_dict().items()},
    )
