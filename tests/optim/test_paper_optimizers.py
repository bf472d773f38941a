"""LARS, LAMB, SWATS, signSGD / EF-signSGD and 1-bit SGD against their papers' algorithms.

Each optimizer is checked against an independent reference written here from the paper's
algorithm box: plain per-tensor loops in float64, no gradwise code. The runs are long
(120 steps), change the learning rate halfway, and use two param groups (one with a 1-D
bias, one with a zero-initialized matrix), and every parameter and state tensor must agree
to 1e-10 relative to its largest entry.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
import torch
from torch import Tensor

from gradwise.optim import (
    LAMB,
    LARS,
    SWATS,
    OneBitSGD,
    Optimizer,
    SignSGD,
    scale_by_one_bit,
    scale_by_sign,
    scale_by_trust_ratio,
)

STEPS = 120
LR_CHANGE_AT = 60
LR_FACTOR = 0.3
RELATIVE_TOLERANCE = 1e-10


# -- references, from the papers' algorithm boxes ---------------------------------------------


def _norm(t: Tensor) -> float:
    return math.sqrt(sum(x * x for x in t.flatten().tolist()))


def _dot(a: list[Tensor], b: list[Tensor]) -> float:
    return sum(
        x * y
        for s, t in zip(a, b, strict=True)
        for x, y in zip(s.flatten().tolist(), t.flatten().tolist(), strict=True)
    )


class ReferenceLARS:
    """You, Gitman & Ginsburg 2017, Algorithm 1 (1-D tensors optionally plain SGD)."""

    def __init__(
        self,
        params: list[Tensor],
        momentum: float,
        weight_decay: float,
        trust_coefficient: float,
        exclude_1d_params: bool = True,
    ) -> None:
        self.params = [p.clone() for p in params]
        self.velocity = [torch.zeros_like(p) for p in params]
        self.momentum, self.weight_decay, self.eta, self.exclude = (
            momentum,
            weight_decay,
            trust_coefficient,
            exclude_1d_params,
        )

    def step(self, grads: list[Tensor], lr: float) -> None:
        for i, (w, g) in enumerate(zip(self.params, grads, strict=True)):
            if self.exclude and w.ndim < 2:
                local_lr, direction = 1.0, g
            else:
                w_norm, g_norm = _norm(w), _norm(g)
                ratio_defined = w_norm > 0 and g_norm > 0
                local_lr = (
                    self.eta * w_norm / (g_norm + self.weight_decay * w_norm)
                    if ratio_defined
                    else 1.0
                )
                direction = g + self.weight_decay * w
            self.velocity[i] = self.momentum * self.velocity[i] + lr * local_lr * direction
            self.params[i] = w - self.velocity[i]

    def state(self, i: int) -> dict[str, Any]:
        # gradwise applies the learning rate before its momentum transform: its buffer is -v.
        return {"momentum_buffer": -self.velocity[i]} if self.momentum else {}


class ReferenceLAMB:
    """You et al. 2020, Algorithm 2 with phi the identity."""

    def __init__(
        self, params: list[Tensor], betas: tuple[float, float], eps: float, weight_decay: float
    ) -> None:
        self.params = [p.clone() for p in params]
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0
        (self.beta1, self.beta2), self.eps, self.weight_decay = betas, eps, weight_decay

    def step(self, grads: list[Tensor], lr: float) -> None:
        self.t += 1
        for i, (w, g) in enumerate(zip(self.params, grads, strict=True)):
            self.m[i] = self.beta1 * self.m[i] + (1 - self.beta1) * g
            self.v[i] = self.beta2 * self.v[i] + (1 - self.beta2) * g * g
            m_hat = self.m[i] / (1 - self.beta1**self.t)
            v_hat = self.v[i] / (1 - self.beta2**self.t)
            r = m_hat / (v_hat.sqrt() + self.eps) + self.weight_decay * w
            w_norm, r_norm = _norm(w), _norm(r)
            ratio = w_norm / r_norm if w_norm > 0 and r_norm > 0 else 1.0
            self.params[i] = w - lr * ratio * r

    def state(self, i: int) -> dict[str, Any]:
        return {"step": self.t, "exp_avg": self.m[i], "exp_avg_sq": self.v[i]}


class ReferenceSWATS:
    """Keskar & Socher 2017, Algorithm 1, over one param group.

    As documented by gradwise.optim.SWATS: after the switch the SGD rate follows learning
    rate changes (Lambda * lr_k / lr_switch), and Lambda must be positive to switch.
    """

    def __init__(
        self,
        params: list[Tensor],
        betas: tuple[float, float],
        eps: float,
        switch_tolerance: float,
        weight_decay: float = 0.0,
    ) -> None:
        assert weight_decay == 0
        self.params = [p.clone() for p in params]
        self.m = [torch.zeros_like(p) for p in params]
        self.a = [torch.zeros_like(p) for p in params]
        self.v: list[Tensor | None] = [None for _ in params]
        (self.beta1, self.beta2), self.eps, self.tolerance = betas, eps, switch_tolerance
        self.k, self.average, self.phase = 0, 0.0, "adam"
        self.switch_step, self.sgd_lr, self.lr_at_switch = 0, 0.0, 0.0

    def step(self, grads: list[Tensor], lr: float) -> None:
        self.k += 1
        b1, b2, k = self.beta1, self.beta2, self.k
        if self.phase == "sgd":
            for i, g in enumerate(grads):
                v = self.v[i]
                v = self.v[i] = g.clone() if v is None else b1 * v + g
                self.params[i] = (
                    self.params[i] - (1 - b1) * self.sgd_lr * (lr / self.lr_at_switch) * v
                )
            return
        steps = []
        for i, g in enumerate(grads):
            self.m[i] = b1 * self.m[i] + (1 - b1) * g
            self.a[i] = b2 * self.a[i] + (1 - b2) * g * g
            p = -lr * math.sqrt(1 - b2**k) / (1 - b1**k) * self.m[i] / (self.a[i].sqrt() + self.eps)
            self.params[i] = self.params[i] + p
            steps.append(p)
        p_dot_g = _dot(steps, grads)
        if p_dot_g != 0:
            gamma = _dot(steps, steps) / -p_dot_g
            self.average = b2 * self.average + (1 - b2) * gamma
            corrected = self.average / (1 - b2**k)
            if k > 1 and corrected > 0 and abs(corrected - gamma) < self.tolerance:
                self.phase, self.switch_step, self.sgd_lr, self.lr_at_switch = (
                    "sgd",
                    k,
                    corrected,
                    lr,
                )

    def state(self, i: int) -> dict[str, Any]:
        # gradwise keeps v in exp_avg once switched (m is no longer used), and a as it was at
        # the switch: the same two buffers in both phases.
        if self.v[i] is not None:
            return {"exp_avg": self.v[i], "exp_avg_sq": self.a[i]}
        return {"exp_avg": self.m[i], "exp_avg_sq": self.a[i]}

    def shared_state(self) -> dict[str, Any]:
        return {
            "step": self.k,
            "projected_lr_average": self.average,
            "switched": self.phase == "sgd",
            "switch_step": self.switch_step,
            "sgd_lr": self.sgd_lr,
            "lr_at_switch": self.lr_at_switch,
        }


def _scaled_sign_with_error(p: Tensor) -> Tensor:
    """Karimireddy et al. 2019: (||p||_1 / d) sign(p)."""
    return sum(abs(x) for x in p.flatten().tolist()) / p.numel() * torch.sign(p)


def _one_bit(p: Tensor) -> Tensor:
    """Seide et al. 2014: one bit per element, reconstructed by the mean of its bin."""
    values = p.flatten().tolist()
    nonnegative = [x for x in values if x >= 0]
    negative = [x for x in values if x < 0]
    mean_nonnegative = sum(nonnegative) / len(nonnegative) if nonnegative else 0.0
    mean_negative = sum(negative) / len(negative) if negative else 0.0
    return torch.tensor(
        [mean_nonnegative if x >= 0 else mean_negative for x in values], dtype=p.dtype
    ).reshape(p.shape)


class ReferenceSignSGD:
    """signSGD / Signum (Bernstein et al. 2018), EF-signSGD (Karimireddy et al. 2019).

    gradwise's conventions: error memory in gradient units, decoupled weight decay.
    """

    def __init__(
        self, params: list[Tensor], momentum: float, error_feedback: bool, weight_decay: float
    ) -> None:
        self.params = [p.clone() for p in params]
        self.m = [torch.zeros_like(p) for p in params]
        self.e = [torch.zeros_like(p) for p in params]
        self.momentum, self.error_feedback, self.weight_decay = (
            momentum,
            error_feedback,
            weight_decay,
        )

    def step(self, grads: list[Tensor], lr: float) -> None:
        for i, (w, g) in enumerate(zip(self.params, grads, strict=True)):
            if self.momentum:
                self.m[i] = self.momentum * self.m[i] + (1 - self.momentum) * g
                g = self.m[i]
            if self.error_feedback:
                p = g + self.e[i]
                u = _scaled_sign_with_error(p)
                self.e[i] = p - u
            else:
                u = torch.sign(g)
            self.params[i] = w - lr * (u + self.weight_decay * w)

    def state(self, i: int) -> dict[str, Any]:
        state = {"momentum_buffer": self.m[i]} if self.momentum else {}
        return state | ({"error": self.e[i]} if self.error_feedback else {})


class ReferenceOneBitSGD:
    """Seide et al. 2014: quantize g + e, keep the error; then SGD (torch's momentum)."""

    def __init__(self, params: list[Tensor], momentum: float, weight_decay: float) -> None:
        self.params = [p.clone() for p in params]
        self.e = [torch.zeros_like(p) for p in params]
        self.b: list[Tensor | None] = [None for _ in params]
        self.momentum, self.weight_decay = momentum, weight_decay

    def step(self, grads: list[Tensor], lr: float) -> None:
        for i, (w, g) in enumerate(zip(self.params, grads, strict=True)):
            p = g + self.e[i]
            quantized = _one_bit(p)
            self.e[i] = p - quantized
            d = quantized + self.weight_decay * w
            if self.momentum:
                b = self.b[i]
                d = self.b[i] = d.clone() if b is None else self.momentum * b + d
            self.params[i] = w - lr * d

    def state(self, i: int) -> dict[str, Any]:
        return {"error": self.e[i]} | ({"momentum_buffer": self.b[i]} if self.momentum else {})


# -- the shared harness ------------------------------------------------------------------------


def _initial_groups() -> list[list[Tensor]]:
    """Group 0: a matrix and its 1-D bias; group 1: a matrix and a zero-initialized one."""
    generator = torch.Generator().manual_seed(0)

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    return [[randn(4, 3), randn(3)], [randn(3, 5), torch.zeros(2, 2, dtype=torch.float64)]]


def _curvatures(params: list[Tensor]) -> list[Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [0.5 + 4 * torch.rand(p.shape, generator=generator, dtype=torch.float64) for p in params]


@dataclass(frozen=True)
class Gradients:
    """g = scale_k * (h * w - c + noise_k), deterministic in the step and the parameters."""

    noise: tuple[float, float] = (0.3, 0.3)
    #: Cycled per step; 1e-7 exposes where eps sits.
    magnitudes: tuple[float, ...] = (1.0, 1e-7, 10.0, 1e-3)

    def __call__(self, step: int, groups: list[list[Tensor]]) -> list[list[Tensor]]:
        generator = torch.Generator().manual_seed(100 + step)
        scale = self.magnitudes[step % len(self.magnitudes)]
        result = []
        for params, noise in zip(groups, self.noise, strict=True):
            result.append(
                [
                    scale
                    * (
                        h * w
                        - 0.2
                        + noise * torch.randn(w.shape, generator=generator, dtype=torch.float64)
                    )
                    for h, w in zip(_curvatures(params), params, strict=True)
                ]
            )
        return result


@dataclass(frozen=True)
class Case:
    name: str
    optimizer: Callable[..., Optimizer]
    reference: Callable[..., Any]
    #: Hyperparameters of the two param groups, ``lr`` included.
    groups: tuple[dict[str, Any], dict[str, Any]]
    gradients: Gradients = field(default_factory=Gradients)
    #: SWATS: the step at which each group switches to SGD (None: never).
    switch_steps: tuple[int | None, ...] = ()

    def __str__(self) -> str:
        return self.name


CASES = [
    Case(
        "LARS",
        LARS,
        ReferenceLARS,
        (
            {"lr": 2.0, "momentum": 0.9, "weight_decay": 5e-4, "trust_coefficient": 0.001},
            {"lr": 0.5, "momentum": 0.8, "weight_decay": 0.0, "trust_coefficient": 0.02},
        ),
    ),
    Case(
        "LARS-1d-adapted",
        LARS,
        ReferenceLARS,
        (
            {
                "lr": 1.0,
                "momentum": 0.9,
                "weight_decay": 1e-2,
                "trust_coefficient": 0.01,
                "exclude_1d_params": False,
            },
            {
                "lr": 1.0,
                "momentum": 0.0,
                "weight_decay": 1e-2,
                "trust_coefficient": 0.01,
                "exclude_1d_params": False,
            },
        ),
    ),
    Case(
        "LAMB",
        LAMB,
        ReferenceLAMB,
        (
            {"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-6, "weight_decay": 0.01},
            {"lr": 0.02, "betas": (0.8, 0.99), "eps": 1e-8, "weight_decay": 0.0},
        ),
    ),
    # Group 0 is a noiseless quadratic: |Lambda_k - gamma_k| changes sign between steps 24
    # (-1.7e-6) and 25 (+5.7e-7), so it switches to SGD at step 25, before the learning rate
    # changes. Group 1 is noisy and stays with Adam.
    Case(
        "SWATS",
        SWATS,
        ReferenceSWATS,
        (
            {"lr": 0.003, "betas": (0.9, 0.999), "eps": 1e-9, "switch_tolerance": 1e-6},
            {"lr": 0.02, "betas": (0.9, 0.99), "eps": 1e-8, "switch_tolerance": 1e-9},
        ),
        Gradients(noise=(0.0, 0.5), magnitudes=(1.0,)),
        switch_steps=(25, None),
    ),
    Case(
        "SignSGD",
        SignSGD,
        ReferenceSignSGD,
        (
            {"lr": 0.01, "momentum": 0.0, "error_feedback": False, "weight_decay": 0.0},
            {"lr": 0.02, "momentum": 0.0, "error_feedback": False, "weight_decay": 0.1},
        ),
    ),
    Case(
        "Signum",
        SignSGD,
        ReferenceSignSGD,
        (
            {"lr": 0.01, "momentum": 0.9, "error_feedback": False, "weight_decay": 0.1},
            {"lr": 0.02, "momentum": 0.5, "error_feedback": False, "weight_decay": 0.0},
        ),
    ),
    Case(
        "EF-SignSGD",
        SignSGD,
        ReferenceSignSGD,
        (
            {"lr": 0.01, "momentum": 0.0, "error_feedback": True, "weight_decay": 0.0},
            {"lr": 0.02, "momentum": 0.0, "error_feedback": True, "weight_decay": 0.1},
        ),
    ),
    Case(
        "EF-Signum",
        SignSGD,
        ReferenceSignSGD,
        (
            {"lr": 0.01, "momentum": 0.9, "error_feedback": True, "weight_decay": 0.1},
            {"lr": 0.02, "momentum": 0.5, "error_feedback": True, "weight_decay": 0.0},
        ),
    ),
    Case(
        "OneBitSGD",
        OneBitSGD,
        ReferenceOneBitSGD,
        (
            {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.01},
            {"lr": 0.02, "momentum": 0.0, "weight_decay": 0.0},
        ),
    ),
]
COMPILED_CASES = [
    case for case in CASES if case.name in ("LARS", "LAMB", "SWATS", "EF-Signum", "OneBitSGD")
]


def _run_gradwise(
    case: Case, implementation: str
) -> tuple[Optimizer, list[list[torch.nn.Parameter]]]:
    groups = [[torch.nn.Parameter(p.clone()) for p in params] for params in _initial_groups()]
    optimizer = case.optimizer(
        [
            {"params": params, **settings}
            for params, settings in zip(groups, case.groups, strict=True)
        ],
        implementation=implementation,
    )
    for step in range(STEPS):
        grads = case.gradients(step, [[p.detach() for p in params] for params in groups])
        for params, group_grads in zip(groups, grads, strict=True):
            for p, g in zip(params, group_grads, strict=True):
                p.grad = g
        optimizer.step()
        if step == LR_CHANGE_AT:
            for group in optimizer.param_groups:
                group["lr"] *= LR_FACTOR
    return optimizer, groups


def _run_reference(case: Case) -> list[Any]:
    references = []
    for params, settings in zip(_initial_groups(), case.groups, strict=True):
        hyperparameters = {k: v for k, v in settings.items() if k != "lr"}
        references.append(case.reference(params, **hyperparameters))
    lrs = [settings["lr"] for settings in case.groups]
    for step in range(STEPS):
        grads = case.gradients(step, [reference.params for reference in references])
        for reference, group_grads, lr in zip(references, grads, lrs, strict=True):
            reference.step(group_grads, lr)
        if step == LR_CHANGE_AT:
            lrs = [lr * LR_FACTOR for lr in lrs]
    return references


def _assert_close(actual: Any, expected: Any, what: str) -> None:
    """Agreement to RELATIVE_TOLERANCE of the expected tensor's largest entry."""
    actual = torch.as_tensor(actual, dtype=torch.float64).reshape(torch.as_tensor(expected).shape)
    expected = torch.as_tensor(expected, dtype=torch.float64)
    scale = expected.abs().max().item() if expected.numel() else 0.0
    error = (actual - expected).abs().max().item() if expected.numel() else 0.0
    assert error <= RELATIVE_TOLERANCE * scale, (
        f"{what}: max error {error:.3g} vs scale {scale:.3g}"
    )


def _assert_matches_reference(case: Case, implementation: str) -> Optimizer:
    optimizer, groups = _run_gradwise(case, implementation)
    references = _run_reference(case)
    for g, (params, reference) in enumerate(zip(groups, references, strict=True)):
        for i, p in enumerate(params):
            _assert_close(p.detach(), reference.params[i], f"group {g} param {i}")
            expected = reference.state(i)
            actual = {k: v for k, v in optimizer.state[p].items() if isinstance(v, Tensor)}
            assert sorted(actual) == sorted(expected), f"group {g} param {i} state keys"
            for key, value in expected.items():
                _assert_close(actual[key], value, f"group {g} param {i} {key}")
        if hasattr(reference, "shared_state"):
            shared = cast(dict[str, Any], optimizer.state)[f"param_group_{g}"]
            for key, value in reference.shared_state().items():
                _assert_close(shared[key], value, f"group {g} {key}")
    if case.switch_steps:
        assert isinstance(optimizer, SWATS)
        assert [switch.step for switch in optimizer.switches] == list(case.switch_steps)
    return optimizer


@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_the_paper_reference(case: Case) -> None:
    _assert_matches_reference(case, "reference")


@pytest.mark.compile
@pytest.mark.parametrize("case", COMPILED_CASES, ids=str)
def test_compiled_matches_the_paper_reference(case: Case) -> None:
    optimizer = _assert_matches_reference(case, "compiled")
    assert optimizer.last_implementations == ["compiled", "compiled"]


# -- LARS --------------------------------------------------------------------------------------


def _one_step(
    optimizer_factory: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer],
    weight: Tensor,
    grad: Tensor,
) -> Tensor:
    param = torch.nn.Parameter(weight.clone())
    optimizer = optimizer_factory([param])
    param.grad = grad.clone()
    optimizer.step()
    return param.detach() - weight


def test_lars_excludes_1d_params_from_the_trust_ratio_and_decay_by_default() -> None:
    bias, grad = (
        torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64),
        torch.tensor([0.3, 0.1, -0.2], dtype=torch.float64),
    )
    excluded = _one_step(lambda p: LARS(p, lr=0.5, weight_decay=0.1), bias, grad)
    torch.testing.assert_close(excluded, -0.5 * grad, rtol=1e-12, atol=0)

    adapted = _one_step(
        lambda p: LARS(p, lr=0.5, weight_decay=0.1, exclude_1d_params=False), bias, grad
    )
    local_lr = 0.001 * bias.norm() / (grad.norm() + 0.1 * bias.norm())
    torch.testing.assert_close(adapted, -0.5 * local_lr * (grad + 0.1 * bias), rtol=1e-12, atol=0)


def test_lars_applies_the_trust_ratio_without_weight_decay() -> None:
    weight = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    grad = torch.tensor([[0.06, 0.08]], dtype=torch.float64)
    step = _one_step(lambda p: LARS(p, lr=1.0, trust_coefficient=0.01), weight, grad)
    # local_lr = 0.01 * 5 / 0.1 = 0.5
    torch.testing.assert_close(step, -0.5 * grad, rtol=1e-12, atol=0)


def test_lars_takes_the_ratio_as_one_when_a_norm_is_zero() -> None:
    zero_weight = torch.zeros(2, 2, dtype=torch.float64)
    grad = torch.tensor([[1.0, -1.0], [0.5, 2.0]], dtype=torch.float64)
    step = _one_step(lambda p: LARS(p, lr=0.1, weight_decay=0.01), zero_weight, grad)
    torch.testing.assert_close(step, -0.1 * grad, rtol=1e-12, atol=0)

    weight = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    step = _one_step(lambda p: LARS(p, lr=0.1, weight_decay=0.01), weight, torch.zeros_like(weight))
    torch.testing.assert_close(step, -0.1 * 0.01 * weight, rtol=1e-12, atol=0)


def test_lars_momentum_buffer_holds_the_scaled_step_from_the_first_step() -> None:
    weight = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    grad = torch.tensor([[0.6, 0.8]], dtype=torch.float64)
    param = torch.nn.Parameter(weight.clone())
    optimizer = LARS([param], lr=2.0, momentum=0.9, trust_coefficient=0.01)
    param.grad = grad.clone()
    optimizer.step()
    # local_lr = 0.01 * 5 / 1 = 0.05: the buffer holds lr * local_lr * g, not the raw g.
    torch.testing.assert_close(
        optimizer.state[param]["momentum_buffer"], -2.0 * 0.05 * grad, rtol=1e-12, atol=0
    )


def test_scale_by_trust_ratio_scales_each_tensor_separately() -> None:
    params = [
        torch.tensor([[3.0, 4.0]], dtype=torch.float64),
        torch.tensor([[1.0, 0.0]], dtype=torch.float64),
    ]
    updates = [
        torch.tensor([[0.0, 2.0]], dtype=torch.float64),
        torch.tensor([[0.0, 0.5]], dtype=torch.float64),
    ]
    transform = scale_by_trust_ratio()
    out, _ = transform.update(updates, transform.init(params), params)
    for u, p in zip(out, params, strict=True):
        torch.testing.assert_close(u.norm(), p.norm(), rtol=1e-12, atol=0)
    assert torch.equal(updates[0], torch.tensor([[0.0, 2.0]], dtype=torch.float64))


# -- LAMB --------------------------------------------------------------------------------------


def test_lamb_first_step_has_norm_lr_times_weight_norm_whatever_the_gradient_scale() -> None:
    weight = torch.tensor([[1.0, -2.0, 2.0]], dtype=torch.float64)
    for grad_scale in (1e-6, 1.0, 1e4):
        grad = grad_scale * torch.tensor([[0.5, 1.0, -3.0]], dtype=torch.float64)
        step = _one_step(lambda p: LAMB(p, lr=0.01, weight_decay=0.1), weight, grad)
        torch.testing.assert_close(
            step.norm(), torch.tensor(0.03, dtype=torch.float64), rtol=1e-12, atol=0
        )


# -- SWATS -------------------------------------------------------------------------------------


def _run_swats(
    weight: Tensor, gradient: Callable[[Tensor], Tensor], steps: int, **settings: Any
) -> tuple[SWATS, torch.nn.Parameter, ReferenceSWATS]:
    param = torch.nn.Parameter(weight.clone())
    optimizer = SWATS([param], **settings)
    lr = settings.get("lr", 1e-3)
    reference = ReferenceSWATS(
        [weight],
        settings.get("betas", (0.9, 0.999)),
        settings.get("eps", 1e-9),
        settings.get("switch_tolerance", 1e-9),
    )
    for _ in range(steps):
        param.grad = gradient(param.detach())
        optimizer.step()
        reference.step([gradient(reference.params[0])], lr)
    _assert_close(param.detach(), reference.params[0], "param")
    return optimizer, param, reference


def test_swats_switches_at_step_2_on_a_linear_objective() -> None:
    # Constant gradient c: with eps = 0 every Adam step is -lr * sign(c), so
    # gamma_k = lr * d / ||c||_1 for all k, Lambda_k equals it, and the test passes at k = 2.
    c = torch.tensor([[1.0, -0.25, 4.0, 0.5]], dtype=torch.float64)
    optimizer, _, reference = _run_swats(
        torch.zeros(1, 4, dtype=torch.float64), lambda w: c.clone(), 10, lr=0.01, eps=0.0
    )
    (switch,) = optimizer.switches
    assert switch.switched
    assert switch.step == 2 == reference.switch_step
    assert switch.lr == pytest.approx(0.01 * 4 / 5.75, rel=1e-12)
    assert switch.lr == pytest.approx(reference.sgd_lr, rel=1e-12)


_CURVATURE = torch.tensor([[1.0, 2.0, 0.5, 4.0]], dtype=torch.float64)
_START = torch.tensor([[1.0, -2.0, 0.5, 3.0]], dtype=torch.float64)


def _quadratic_gradient(w: Tensor) -> Tensor:
    return _CURVATURE * w


def test_swats_switches_mid_run_on_a_noiseless_quadratic() -> None:
    optimizer, param, reference = _run_swats(
        _START, _quadratic_gradient, 150, lr=0.01, switch_tolerance=2.5e-6
    )
    (switch,) = optimizer.switches
    assert switch.switched
    assert switch.step == reference.switch_step
    assert 5 < switch.step < 100
    assert switch.lr == pytest.approx(reference.sgd_lr, rel=1e-10)
    # Memory: two buffers in both phases; exp_avg now holds v (never rescaled), exp_avg_sq
    # the second moment as it was at the switch.
    assert set(optimizer.state[param]) == {"exp_avg", "exp_avg_sq"}
    _assert_close(optimizer.state[param]["exp_avg"], reference.v[0], "exp_avg (v)")
    _assert_close(optimizer.state[param]["exp_avg_sq"], reference.a[0], "exp_avg_sq")


def test_swats_stays_with_adam_when_the_test_never_passes() -> None:
    optimizer, param, reference = _run_swats(_START, _quadratic_gradient, 150, lr=0.01)
    assert optimizer.switches[0] == (False, None, None)
    assert reference.phase == "adam"
    assert set(optimizer.state[param]) == {"exp_avg", "exp_avg_sq"}


def test_swats_state_dict_carries_the_switch() -> None:
    optimizer, param, _ = _run_swats(
        _START, _quadratic_gradient, 40, lr=0.01, switch_tolerance=2.5e-6
    )
    assert optimizer.switches[0].switched
    buffer = io.BytesIO()
    torch.save({"param": param.detach(), "optimizer": optimizer.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    resumed_param = torch.nn.Parameter(saved["param"].clone())
    resumed = SWATS([resumed_param], lr=0.01, switch_tolerance=2.5e-6)
    resumed.load_state_dict(saved["optimizer"])
    assert resumed.switches == optimizer.switches
    for p, opt in ((param, optimizer), (resumed_param, resumed)):
        for _ in range(5):
            p.grad = _quadratic_gradient(p.detach())
            opt.step()
    assert torch.equal(param.detach(), resumed_param.detach())


def test_swats_with_a_schedule_equals_changing_lr_every_step() -> None:
    def schedule(step: Any) -> Any:
        return 0.01 / (1 + step / 10)

    scheduled = torch.nn.Parameter(_START.clone())
    manual = torch.nn.Parameter(_START.clone())
    by_schedule = SWATS([scheduled], lr=schedule, switch_tolerance=2.5e-6)
    by_hand = SWATS([manual], lr=schedule(0), switch_tolerance=2.5e-6)
    for step in range(40):
        by_hand.param_groups[0]["lr"] = schedule(step)
        for p, opt in ((scheduled, by_schedule), (manual, by_hand)):
            p.grad = _quadratic_gradient(p.detach())
            opt.step()
    assert by_schedule.switches == by_hand.switches
    torch.testing.assert_close(scheduled.detach(), manual.detach(), rtol=1e-12, atol=0)


# -- sign and 1-bit compression ----------------------------------------------------------------


def _residuals(transform_factory: Callable[[], Any], steps: int, keep_state: bool) -> list[float]:
    """||sum of gradients - sum of compressed updates|| after each step, in gradient units."""
    generator = torch.Generator().manual_seed(5)
    mean = torch.tensor([1.0, 0.01, -0.5, 0.002, 3.0, -0.05], dtype=torch.float64)
    params = [torch.zeros(6, dtype=torch.float64)]
    transform = transform_factory()
    state = transform.init(params)
    total_gradient = torch.zeros(6, dtype=torch.float64)
    total_update = torch.zeros(6, dtype=torch.float64)
    residuals = []
    for _ in range(steps):
        g = mean + 0.1 * torch.randn(6, generator=generator, dtype=torch.float64)
        (u,), new_state = transform.update(
            [g], state if keep_state else transform.init(params), params
        )
        state = new_state
        total_gradient += g
        total_update += u
        residuals.append(torch.linalg.vector_norm(total_gradient - total_update).item())
    return residuals


@pytest.mark.parametrize(
    ("name", "with_feedback", "without_feedback"),
    [
        ("sign", lambda: scale_by_sign(error_feedback=True), lambda: scale_by_sign()),
        ("one-bit", scale_by_one_bit, scale_by_one_bit),
    ],
)
def test_error_feedback_keeps_the_sum_of_updates_on_the_sum_of_gradients(
    name: str, with_feedback: Callable[[], Any], without_feedback: Callable[[], Any]
) -> None:
    steps = 2000
    tracked = _residuals(with_feedback, steps, keep_state=True)
    assert max(tracked) < 10.0, name
    # Without error feedback (for 1-bit: the memory dropped every step) the bias adds up.
    drifting = _residuals(without_feedback, steps, keep_state=False)
    assert drifting[-1] > 100.0, name
    assert drifting[-1] > 1.8 * drifting[steps // 2 - 1], name


def test_signum_keeps_its_momentum_across_steps() -> None:
    param = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    optimizer = SignSGD([param], lr=0.1, momentum=0.9)
    for grad in ([1.0, 1.0, 1.0], [-0.5, -0.05, 2.0]):
        param.grad = torch.tensor(grad, dtype=torch.float64)
        optimizer.step()
    # m = 0.9 * 0.1 * [1, 1, 1] + 0.1 * [-0.5, -0.05, 2] = [0.04, 0.085, 0.29]: all positive.
    torch.testing.assert_close(
        optimizer.state[param]["momentum_buffer"],
        torch.tensor([0.04, 0.085, 0.29], dtype=torch.float64),
        rtol=1e-14,
        atol=0,
    )
    torch.testing.assert_close(
        param.detach(), torch.full((3,), -0.2, dtype=torch.float64), rtol=1e-12, atol=0
    )


def _f64(values: list[float]) -> Tensor:
    return torch.tensor(values, dtype=torch.float64)


# (hyperparameter switched on after step 1, its value, gradients of steps 2 and 3, and the
# state after step 3 and the updates u_2, u_3 before the learning rate, by hand). Momentum
# starts from zero (Signum's convention, as at construction): m_2 = 0.1 g_2 and
# m_3 = 0.9 m_2 + 0.1 g_3 = [0.04, -0.11, 0.39]; a buffer started at g_2 (torch.optim.SGD's
# b_1 = g_1) would give m_3 = [0.85, 0.7, 1.2], all positive. The error memory starts at
# zero: p_2 = g_2, u_2 = 4/3 sign(g_2), e_2 = [5/3, 1/3, 0]; p_3 = g_3 + e_2 = [5/3, -2/3, 1],
# u_3 = 10/9 sign(p_3), e_3 = p_3 - u_3 = [5/9, 4/9, -1/9].
_SWITCHED_ON = [
    (
        "momentum",
        0.9,
        ([1.0, 1.0, 1.0], [-0.5, -2.0, 3.0]),
        ("momentum_buffer", [0.04, -0.11, 0.39]),
        ([1.0, 1.0, 1.0], [1.0, -1.0, 1.0]),
    ),
    (
        "error_feedback",
        True,
        ([3.0, -1.0, 0.0], [0.0, -1.0, 1.0]),
        ("error", [5 / 9, 4 / 9, -1 / 9]),
        ([4 / 3, -4 / 3, 0.0], [10 / 9, -10 / 9, 10 / 9]),
    ),
]


@pytest.mark.parametrize(
    "implementation", ["reference", pytest.param("compiled", marks=pytest.mark.compile)]
)
@pytest.mark.parametrize(
    ("name", "value", "grads", "expected_state", "updates"),
    _SWITCHED_ON,
    ids=[case[0] for case in _SWITCHED_ON],
)
def test_sign_sgd_feature_switched_on_mid_run_starts_from_its_initial_state(
    implementation: str,
    name: str,
    value: Any,
    grads: tuple[list[float], list[float]],
    expected_state: tuple[str, list[float]],
    updates: tuple[list[float], list[float]],
) -> None:
    # As a user or a scheduler may: the state made while the feature was off has no entry.
    start = [1.0, -2.0, 0.5]
    param = torch.nn.Parameter(_f64(start))
    optimizer = SignSGD([param], lr=0.1, implementation=implementation)  # type: ignore[arg-type]
    param.grad = _f64([0.3, -0.2, 0.0])
    optimizer.step()  # plain signSGD: u_1 = [1, -1, 0]
    optimizer.param_groups[0][name] = value
    for grad in grads:
        param.grad = _f64(grad)
        optimizer.step()
    assert optimizer.last_implementations == [implementation]
    expected = [
        w - 0.1 * (u1 + u2 + u3)
        for w, u1, u2, u3 in zip(start, [1.0, -1.0, 0.0], *updates, strict=True)
    ]
    torch.testing.assert_close(param.detach(), _f64(expected), rtol=1e-14, atol=1e-15)
    key, state = expected_state
    torch.testing.assert_close(optimizer.state[param][key], _f64(state), rtol=1e-14, atol=1e-15)


def test_one_bit_reconstructs_with_the_mean_of_each_bin() -> None:
    params = [torch.zeros(5, dtype=torch.float64)]
    g = torch.tensor([3.0, -1.0, 1.0, -2.0, 0.0], dtype=torch.float64)
    transform = scale_by_one_bit()
    (u,), state = transform.update([g], transform.init(params), params)
    torch.testing.assert_close(
        u, torch.tensor([4 / 3, -1.5, 4 / 3, -1.5, 4 / 3], dtype=torch.float64)
    )
    torch.testing.assert_close(state["error"][0], g - u)


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "name", "kwargs", "message"),
    [
        (LARS, "trust_coefficient", {"trust_coefficient": 0}, "a finite float > 0. Got 0 instead."),
        (LARS, "lr", {"lr": -1.0}, "a finite float >= 0"),
        (LARS, "momentum", {"momentum": -0.1}, "a finite float >= 0"),
        (LARS, "weight_decay", {"weight_decay": -1e-4}, "a finite float >= 0"),
        (LARS, "exclude_1d_params", {"exclude_1d_params": 1}, "a bool"),
        (LAMB, "betas", {"betas": (0.9, 1.0)}, r"a pair of floats in \[0, 1\)"),
        (LAMB, "eps", {"eps": -1e-6}, "a finite float >= 0"),
        (SWATS, "betas", {"betas": (-0.1, 0.999)}, r"a pair of floats in \[0, 1\)"),
        (SWATS, "switch_tolerance", {"switch_tolerance": -1.0}, "a finite float >= 0"),
        (SignSGD, "momentum", {"momentum": -0.5}, r"a float in \[0, 1\)"),
        (SignSGD, "error_feedback", {"error_feedback": "yes"}, "a bool"),
        (OneBitSGD, "weight_decay", {"weight_decay": -0.1}, "a finite float >= 0"),
    ],
)
def test_bad_hyperparameters_raise_at_construction(
    cls: type, name: str, kwargs: dict[str, Any], message: str
) -> None:
    param = torch.nn.Parameter(torch.zeros(2, 2))
    with pytest.raises(
        ValueError, match=f"^The '{name}' parameter of {cls.__name__} must be {message}"
    ):
        cls([param], **kwargs)
