"""Every optimizer in gradwise.optim, and what the shared conformance tests need to know.

Adding an optimizer to the suite is one entry here (STYLE.md §8): entries declare what
they support instead of growing skip lists in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from gradwise import optim


@dataclass(frozen=True)
class Convergence:
    """Constructor settings and a step budget that reach the minimizer within ``tolerance``."""

    settings: dict[str, Any]
    steps: int
    tolerance: float


@dataclass(frozen=True)
class OptimizerEntry:
    name: str
    cls: type[torch.optim.Optimizer]
    #: Settings for the generic tests (state round trip, dtypes, fast paths).
    settings: dict[str, Any]
    #: Per-element state buffers per parameter with these settings: the algorithm's minimum.
    state_buffers: int
    quadratic: Convergence
    rosenbrock: Convergence
    #: The torch.optim class with the same algorithm, and keyword variants to compare.
    torch_class: type[torch.optim.Optimizer] | None = None
    torch_variants: tuple[dict[str, Any], ...] = ()
    #: Implementations other than "reference" that must give the reference's numbers.
    fast_paths: tuple[str, ...] = ("compiled",)
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float64, torch.bfloat16)
    #: (name of the offending parameter, constructor kwargs) that must raise ValueError.
    bad_hyperparameters: tuple[tuple[str, dict[str, Any]], ...] = ()
    #: (hyperparameter, the end of its error after "must be ", with {} for the value) for
    #: each one whose infinity is refused: an infinite rate, eps or decay would only surface
    #: later, as NaN or frozen weights.
    infinite_hyperparameters: tuple[tuple[str, str], ...] = ()
    #: Settings that switch weight decay off, for the zero-gradient test.
    without_weight_decay: dict[str, Any] = field(default_factory=lambda: {"weight_decay": 0.0})
    #: False for optimizers whose closure must return the loss without calling backward().
    closure_calls_backward: bool = True
    #: Whether a parameter without ``.grad`` is left alone (False: the update couples them all).
    skips_parameters_without_grad: bool = True
    #: Whether several param groups (with per-group hyperparameters) are supported.
    supports_param_groups: bool = True
    #: Whether ``lr`` may be a schedule (gradwise.schedules), evaluated at each step.
    supports_schedule_lr: bool = True

    def __str__(self) -> str:
        return self.name

    def make(self, params: Any, **overrides: Any) -> torch.optim.Optimizer:
        return self.cls(params, **{**self.settings, **overrides})


def _inverse_time(initial: float, scale: float) -> Any:
    """initial / (1 + step / scale), for numbers and tensors of steps alike."""
    return lambda step: initial / (1 + step / scale)


_NEGATIVE_LR = ("lr", {"lr": -0.1})
_NEGATIVE_WEIGHT_DECAY = ("weight_decay", {"weight_decay": -1e-4})
_NEGATIVE_EPS = ("eps", {"eps": -1e-8})
_BAD_BETAS = (("betas", {"betas": (1.0, 0.999)}), ("betas", {"betas": (0.9, -0.1)}))
_NEGATIVE_SCHEDULE = ("lr", {"lr": lambda step: 0.1 - 0.01 * step})

_FINITE_NON_NEGATIVE = "a finite float >= 0. Got {} instead."
_FINITE_POSITIVE = "a finite float > 0. Got {} instead."
_INFINITE_LR = (
    "lr",
    "a finite float >= 0 or a schedule whose values are all finite and >= 0. "
    "Got {} instead, which is not a finite number >= 0.",
)
_INFINITE_WEIGHT_DECAY = ("weight_decay", _FINITE_NON_NEGATIVE)
_INFINITE_EPS = ("eps", _FINITE_NON_NEGATIVE)
_INFINITE_MOMENTUM = ("momentum", _FINITE_NON_NEGATIVE)
_INFINITE_ADAM = (_INFINITE_LR, _INFINITE_WEIGHT_DECAY, _INFINITE_EPS)

REGISTRY: list[OptimizerEntry] = [
    OptimizerEntry(
        "SGD",
        optim.SGD,
        settings={"lr": 0.05, "momentum": 0.9},
        state_buffers=1,
        quadratic=Convergence({"lr": 0.05, "momentum": 0.9}, 300, 1e-6),
        rosenbrock=Convergence({"lr": 2e-3, "momentum": 0.9}, 2000, 1e-6),
        torch_class=torch.optim.SGD,
        torch_variants=(
            {"lr": 0.01},
            {"lr": 0.01, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.05},
            {"lr": 0.01, "momentum": 0.9, "nesterov": True, "weight_decay": 0.05},
            {"lr": 0.01, "momentum": 0.5, "maximize": True},
        ),
        fast_paths=("fused", "compiled"),
        bad_hyperparameters=(
            _NEGATIVE_LR,
            _NEGATIVE_WEIGHT_DECAY,
            _NEGATIVE_SCHEDULE,
            ("momentum", {"momentum": -0.9}),
            ("nesterov", {"momentum": 0.0, "nesterov": True}),
            ("dampening", {"dampening": 2.0}),
        ),
        infinite_hyperparameters=(_INFINITE_LR, _INFINITE_WEIGHT_DECAY, _INFINITE_MOMENTUM),
    ),
    OptimizerEntry(
        "Adam",
        optim.Adam,
        settings={"lr": 0.01},
        state_buffers=2,
        quadratic=Convergence({"lr": 0.05}, 1000, 1e-6),
        rosenbrock=Convergence({"lr": 0.05}, 2000, 1e-4),
        torch_class=torch.optim.Adam,
        torch_variants=(
            {"lr": 0.01},
            {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True},
            {"lr": 0.01, "betas": (0.5, 0.9), "eps": 1e-6, "maximize": True},
            {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True},
        ),
        fast_paths=("fused", "compiled"),
        bad_hyperparameters=(
            _NEGATIVE_LR,
            _NEGATIVE_WEIGHT_DECAY,
            _NEGATIVE_EPS,
            *_BAD_BETAS,
            _NEGATIVE_SCHEDULE,
        ),
        infinite_hyperparameters=_INFINITE_ADAM,
    ),
    OptimizerEntry(
        "AdamW",
        optim.AdamW,
        settings={"lr": 0.01},
        state_buffers=2,
        quadratic=Convergence({"lr": 0.05, "weight_decay": 0.0}, 1000, 1e-6),
        rosenbrock=Convergence({"lr": 0.05, "weight_decay": 0.0}, 2000, 1e-4),
        torch_class=torch.optim.AdamW,
        torch_variants=({"lr": 0.01}, {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}),
        fast_paths=("fused", "compiled"),
        bad_hyperparameters=(_NEGATIVE_LR, _NEGATIVE_WEIGHT_DECAY, _NEGATIVE_EPS, *_BAD_BETAS),
        infinite_hyperparameters=_INFINITE_ADAM,
    ),
    OptimizerEntry(
        "Adagrad",
        optim.Adagrad,
        settings={"lr": 0.1},
        state_buffers=1,
        quadratic=Convergence({"lr": 0.5}, 1000, 1e-6),
        rosenbrock=Convergence({"lr": 0.5}, 10000, 1e-2),
        torch_class=torch.optim.Adagrad,
        torch_variants=(
            {"lr": 0.1},
            {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.1, "initial_accumulator_value": 0.1},
            {"lr": 0.1, "eps": 1e-6, "maximize": True},
        ),
        fast_paths=("fused", "compiled"),
        bad_hyperparameters=(
            _NEGATIVE_LR,
            _NEGATIVE_WEIGHT_DECAY,
            _NEGATIVE_EPS,
            ("lr_decay", {"lr_decay": -1.0}),
            ("initial_accumulator_value", {"initial_accumulator_value": -0.1}),
        ),
        infinite_hyperparameters=(
            *_INFINITE_ADAM,
            ("lr_decay", _FINITE_NON_NEGATIVE),
            ("initial_accumulator_value", _FINITE_NON_NEGATIVE),
        ),
    ),
    OptimizerEntry(
        "RMSprop",
        optim.RMSprop,
        settings={"lr": 0.01},
        state_buffers=1,
        quadratic=Convergence({"lr": 1e-3, "momentum": 0.9}, 2000, 2e-3),
        rosenbrock=Convergence({"lr": 3e-4, "momentum": 0.9}, 3000, 1e-3),
        torch_class=torch.optim.RMSprop,
        torch_variants=(
            {"lr": 0.01},
            {"lr": 0.01, "momentum": 0.9, "centered": True, "weight_decay": 0.1},
            {"lr": 0.01, "alpha": 0.9, "eps": 1e-6, "maximize": True, "momentum": 0.5},
        ),
        fast_paths=("fused", "compiled"),
        bad_hyperparameters=(
            _NEGATIVE_LR,
            _NEGATIVE_WEIGHT_DECAY,
            _NEGATIVE_EPS,
            ("alpha", {"alpha": 1.5}),
            ("momentum", {"momentum": -0.1}),
        ),
        infinite_hyperparameters=(*_INFINITE_ADAM, _INFINITE_MOMENTUM),
    ),
    OptimizerEntry(
        "Adadelta",
        optim.Adadelta,
        settings={"lr": 1.0},
        state_buffers=2,
        # A constant learning rate makes AdaDelta hover near the minimum; a decaying one converges.
        quadratic=Convergence({"lr": _inverse_time(1.0, 200)}, 3000, 1e-6),
        rosenbrock=Convergence({"lr": _inverse_time(3.0, 300), "rho": 0.95}, 5000, 1e-2),
        torch_class=torch.optim.Adadelta,
        torch_variants=(
            {"lr": 1.0},
            {"lr": 0.5, "rho": 0.95, "eps": 1e-5, "weight_decay": 0.1},
            {"lr": 1.0, "maximize": True},
        ),
        fast_paths=("fused", "compiled"),
        bad_hyperparameters=(
            _NEGATIVE_LR,
            _NEGATIVE_WEIGHT_DECAY,
            _NEGATIVE_EPS,
            ("rho", {"rho": 1.5}),
        ),
        infinite_hyperparameters=_INFINITE_ADAM,
    ),
    OptimizerEntry(
        "NAdam",
        optim.NAdam,
        settings={"lr": 0.01},
        state_buffers=2,
        quadratic=Convergence({"lr": 0.01}, 2000, 1e-6),
        rosenbrock=Convergence({"lr": 0.002, "betas": (0.9, 0.99)}, 5000, 1e-3),
        torch_class=torch.optim.NAdam,
        torch_variants=(
            {"lr": 0.01},
            {"lr": 0.01, "weight_decay": 0.1, "momentum_decay": 1e-2},
            {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True, "maximize": True},
        ),
        fast_paths=("fused", "compiled"),
        bad_hyperparameters=(
            _NEGATIVE_LR,
            _NEGATIVE_WEIGHT_DECAY,
            _NEGATIVE_EPS,
            *_BAD_BETAS,
            ("momentum_decay", {"momentum_decay": -1.0}),
        ),
        infinite_hyperparameters=(*_INFINITE_ADAM, ("momentum_decay", _FINITE_NON_NEGATIVE)),
    ),
    OptimizerEntry(
        "RAdam",
        optim.RAdam,
        settings={"lr": 0.01},
        state_buffers=2,
        # RAdam's first five steps are un-normalized (lr * m_hat): a large lr flies off.
        quadratic=Convergence({"lr": 0.05}, 1000, 1e-6),
        rosenbrock=Convergence({"lr": 0.001, "betas": (0.9, 0.99)}, 5000, 1e-3),
        torch_class=torch.optim.RAdam,
        torch_variants=(
            {"lr": 0.01},
            {"lr": 0.01, "weight_decay": 0.1, "betas": (0.8, 0.99)},
            {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True, "maximize": True},
        ),
        fast_paths=("fused", "compiled"),
        bad_hyperparameters=(_NEGATIVE_LR, _NEGATIVE_WEIGHT_DECAY, _NEGATIVE_EPS, *_BAD_BETAS),
        infinite_hyperparameters=_INFINITE_ADAM,
    ),
    OptimizerEntry(
        "LARS",
        optim.LARS,
        settings={"lr": 1.0, "momentum": 0.9, "weight_decay": 1e-4},
        state_buffers=1,
        # The trust ratio makes each step lr * eta * ||w|| long whatever the gradient: with a
        # constant lr the iterates hover at that distance, so the lr decays.
        quadratic=Convergence({"lr": lambda step: 3.0 * 0.99**step}, 1500, 1e-6),
        rosenbrock=Convergence({"lr": lambda step: 5.0 * 0.9985**step}, 5000, 1e-4),
        bad_hyperparameters=(
            _NEGATIVE_LR,
            _NEGATIVE_WEIGHT_DECAY,
            _NEGATIVE_SCHEDULE,
            ("momentum", {"momentum": -0.9}),
            ("trust_coefficient", {"trust_coefficient": 0.0}),
        ),
        infinite_hyperparameters=(
            _INFINITE_LR,
            _INFINITE_WEIGHT_DECAY,
            _INFINITE_MOMENTUM,
            ("trust_coefficient", _FINITE_POSITIVE),
        ),
    ),
    OptimizerEntry(
        "LAMB",
        optim.LAMB,
        settings={"lr": 0.01, "weight_decay": 0.01},
        state_buffers=2,
        # Steps of lr * ||w|| (trust ratio), as for LARS: the lr decays.
        quadratic=Convergence({"lr": lambda step: 0.1 * 0.99**step}, 1500, 1e-6),
        rosenbrock=Convergence({"lr": lambda step: 0.2 * 0.997**step}, 5000, 1e-4),
        bad_hyperparameters=(
            _NEGATIVE_LR,
            _NEGATIVE_WEIGHT_DECAY,
            _NEGATIVE_EPS,
            *_BAD_BETAS,
            _NEGATIVE_SCHEDULE,
        ),
        infinite_hyperparameters=_INFINITE_ADAM,
    ),
    OptimizerEntry(
        "SWATS",
        optim.SWATS,
        settings={"lr": 0.01},
        state_buffers=2,
        quadratic=Convergence({"lr": 0.05}, 1000, 1e-6),
        rosenbrock=Convergence({"lr": 0.05}, 2000, 1e-4),
        bad_hyperparameters=(
            _NEGATIVE_LR,
            _NEGATIVE_WEIGHT_DECAY,
            _NEGATIVE_EPS,
            *_BAD_BETAS,
            _NEGATIVE_SCHEDULE,
            ("switch_tolerance", {"switch_tolerance": -1e-9}),
        ),
        infinite_hyperparameters=(*_INFINITE_ADAM, ("switch_tolerance", _FINITE_NON_NEGATIVE)),
    ),
    OptimizerEntry(
        "SignSGD",
        optim.SignSGD,
        settings={"lr": 0.01, "momentum": 0.9, "error_feedback": True},
        state_buffers=2,
        # Sign steps are lr long whatever the gradient: the lr decays (Signum, no feedback).
        quadratic=Convergence({"lr": lambda step: 0.01 * 0.99**step, "momentum": 0.9}, 1500, 1e-6),
        rosenbrock=Convergence(
            {"lr": lambda step: 0.02 * 0.998**step, "momentum": 0.9}, 5000, 1e-4
        ),
        bad_hyperparameters=(
            _NEGATIVE_LR,
            _NEGATIVE_WEIGHT_DECAY,
            _NEGATIVE_SCHEDULE,
            ("momentum", {"momentum": -0.9}),
            ("momentum", {"momentum": 1.0}),
            ("error_feedback", {"error_feedback": None}),
        ),
        infinite_hyperparameters=(_INFINITE_LR, _INFINITE_WEIGHT_DECAY),
    ),
    OptimizerEntry(
        "OneBitSGD",
        optim.OneBitSGD,
        settings={"lr": 0.01, "momentum": 0.9},
        state_buffers=2,
        # Error feedback delays part of each gradient: with momentum 0.9 lr=0.05 diverges here.
        quadratic=Convergence({"lr": 0.05}, 1000, 1e-6),
        rosenbrock=Convergence({"lr": 2e-3, "momentum": 0.9}, 2000, 1e-6),
        bad_hyperparameters=(
            _NEGATIVE_LR,
            _NEGATIVE_WEIGHT_DECAY,
            _NEGATIVE_SCHEDULE,
            ("momentum", {"momentum": -0.9}),
        ),
        infinite_hyperparameters=(_INFINITE_LR, _INFINITE_WEIGHT_DECAY, _INFINITE_MOMENTUM),
    ),
    OptimizerEntry(
        "Newton",
        optim.Newton,
        settings={"lr": 1.0, "damping": 1e-3},
        state_buffers=0,
        quadratic=Convergence({"lr": 1.0, "damping": 1e-10}, 1, 1e-8),
        rosenbrock=Convergence({"lr": 1.0, "damping": 1e-8}, 30, 1e-8),
        fast_paths=(),
        dtypes=(torch.float32, torch.float64),
        bad_hyperparameters=(
            _NEGATIVE_LR,
            ("damping", {"damping": -1.0}),
            ("max_params", {"max_params": 0}),
        ),
        infinite_hyperparameters=(
            ("lr", _FINITE_NON_NEGATIVE),
            ("damping", _FINITE_NON_NEGATIVE),
            ("max_damping", _FINITE_POSITIVE),
        ),
        without_weight_decay={},
        closure_calls_backward=False,
        skips_parameters_without_grad=False,
        supports_param_groups=False,
        supports_schedule_lr=False,
    ),
]
