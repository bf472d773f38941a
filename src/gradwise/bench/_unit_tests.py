"""Schaul, Antonoglou & Silver's (2014) unit tests: prototype shapes, noise, and their products.

A unit test is a small stochastic problem built from parts, as in the paper: a
one-dimensional *shape* (the deterministic function), a *noise* prototype (how one sample's
function differs from the mean), a *scale*, a *dimension* with a condition number and an
optional rotation, and an optional *drift* of the optimum (non-stationarity).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from gradwise._validation import NON_NEGATIVE, POSITIVE, POSITIVE_INT, Interval, OneOf, check

_ROTATION_SEED = 20140101  # the fixed rotation of every rotated test (any fixed seed would do)


@dataclass(frozen=True)
class Shape:
    """A one-dimensional prototype function with its minimum at 0, where it is 0.

    ``function`` maps a tensor elementwise; a test applies it to each coordinate.

    Example:
        >>> import torch
        >>> from gradwise.bench import SHAPES
        >>> SHAPES["absolute"].function(torch.tensor([-2.0, 0.0, 3.0])).tolist()
        [2.0, 0.0, 3.0]
    """

    name: str
    formula: str
    function: Callable[[Tensor], Tensor]
    minimum: float = 0.0


@dataclass(frozen=True)
class Noise:
    r"""A noise prototype: how one sample's loss differs from the noise-free shape.

    ``where`` is ``"shift"`` (each sample's optimum moves: :math:`f(z - \xi)`) or
    ``"factor"`` (each sample's loss is scaled: :math:`\xi f(z)`); ``sample(size,
    generator)`` draws :math:`\xi` with the stated distribution.

    Example:
        >>> import torch
        >>> from gradwise.bench import NOISES
        >>> draws = NOISES["mask"].sample((4,), torch.Generator().manual_seed(0))
        >>> sorted(set(draws.tolist())) <= [0.0, 10.0]
        True
    """

    name: str
    description: str
    where: str
    sample: Callable[[tuple[int, ...], torch.Generator], Tensor]


def _quadratic(z: Tensor) -> Tensor:
    return 0.5 * z**2


def _absolute(z: Tensor) -> Tensor:
    return z.abs()


def _gauss(z: Tensor) -> Tensor:
    return 1.0 - torch.exp(-0.5 * z**2)


def _laplace(z: Tensor) -> Tensor:
    return 1.0 - torch.exp(-z.abs())


def _cliff(z: Tensor) -> Tensor:
    return torch.where(z >= 0, 0.1 * z, -10.0 * z)


SHAPES: dict[str, Shape] = {
    shape.name: shape
    for shape in (
        Shape("quadratic", "z^2 / 2", _quadratic),
        Shape("absolute", "|z|", _absolute),
        Shape("gauss", "1 - exp(-z^2 / 2)", _gauss),
        Shape("laplace", "1 - exp(-|z|)", _laplace),
        Shape("cliff", "z / 10 for z >= 0, -10 z for z < 0", _cliff),
    )
}

MASK_PROBABILITY = 0.1
"""The chance that a ``mask`` sample's gradient is not zero."""


def _none(size: tuple[int, ...], generator: torch.Generator) -> Tensor:
    return torch.ones(size, dtype=torch.float64)  # a factor of 1: the shape itself


def _additive_gauss(size: tuple[int, ...], generator: torch.Generator) -> Tensor:
    return torch.randn(size, generator=generator, dtype=torch.float64)


def _multiplicative_gauss(size: tuple[int, ...], generator: torch.Generator) -> Tensor:
    return 1.0 + torch.randn(size, generator=generator, dtype=torch.float64)


def _additive_cauchy(size: tuple[int, ...], generator: torch.Generator) -> Tensor:
    uniform = torch.rand(size, generator=generator, dtype=torch.float64)
    return torch.tan(math.pi * (uniform - 0.5))  # the inverse CDF of Cauchy(0, 1)


def _mask(size: tuple[int, ...], generator: torch.Generator) -> Tensor:
    keep = torch.rand(size, generator=generator, dtype=torch.float64) < MASK_PROBABILITY
    return keep.to(torch.float64) / MASK_PROBABILITY


NOISES: dict[str, Noise] = {
    noise.name: noise
    for noise in (
        Noise("none", "deterministic: every sample is the shape itself", "factor", _none),
        Noise("additive-gauss", "optimum shifted by xi ~ N(0, 1) per sample", "shift",
              _additive_gauss),
        Noise("multiplicative-gauss", "loss scaled by xi ~ N(1, 1) per sample", "factor",
              _multiplicative_gauss),
        Noise("additive-cauchy", "optimum shifted by xi ~ Cauchy(0, 1) per sample", "shift",
              _additive_cauchy),
        Noise("mask", f"loss scaled by xi = Bernoulli({MASK_PROBABILITY}) / "
              f"{MASK_PROBABILITY}: sparse gradients with the right mean", "factor", _mask),
    )
}  # fmt: skip


@dataclass(frozen=True)
class UnitTest:
    r"""One unit test: a shape, a noise, a scale, a dimension, a rotation and a drift.

    With :math:`c_i` log-spaced from 1 to ``condition`` over the ``dim`` coordinates,
    :math:`R` a fixed random rotation (the identity unless ``rotated``) and the optimum
    :math:`\mu_t = \text{drift} \cdot t \cdot \mathbf{1}` at step :math:`t`, the loss of one
    sample :math:`\xi` at the point :math:`x` is

    .. math:: \ell_\xi(x) = s \sum_i c_i\, \nu_\xi\big(f, (R (x - \mu_t))_i\big)

    where :math:`\nu_\xi(f, z)` is :math:`f(z - \xi_i)` for shift noise and
    :math:`\xi_i f(z)` for factor noise, and :math:`s` is ``scale``. The score uses the
    noise-free loss gap :math:`s \sum_i c_i f((R(x - \mu_t))_i)`, zero at the optimum
    (:meth:`loss_gap`). Every run starts at ``start`` in each coordinate.

    Example:
        >>> import torch
        >>> from gradwise.bench import get_unit_test
        >>> test = get_unit_test("quadratic/none/scale=1/dim=1")
        >>> test.loss_gap(torch.tensor([[2.0]], dtype=torch.float64), step=0).tolist()
        [2.0]
    """

    shape: Shape
    noise: Noise
    scale: float = 1.0
    dim: int = 1
    condition: float = 1.0
    rotated: bool = False
    drift: float = 0.0
    start: float = 2.0

    @property
    def name(self) -> str:
        """``shape/noise/scale=s/dim=d`` plus ``/kappa=..``, ``/rotated``, ``/drift=..``."""
        parts = [self.shape.name, self.noise.name, f"scale={self.scale:g}", f"dim={self.dim}"]
        if self.condition != 1.0:
            parts.append(f"kappa={self.condition:g}")
        if self.rotated:
            parts.append("rotated")
        if self.drift:
            parts.append(f"drift={self.drift:g}")
        return "/".join(parts)

    def coefficients(self) -> Tensor:
        """The per-coordinate curvature scales :math:`c_i`, shape ``(dim,)``."""
        return self._coefficients

    @cached_property
    def _coefficients(self) -> Tensor:
        if self.dim == 1:
            return torch.ones(1, dtype=torch.float64)
        exponents = torch.linspace(0.0, 1.0, self.dim, dtype=torch.float64)
        return self.condition**exponents

    def rotation(self) -> Tensor:
        """The fixed orthogonal matrix :math:`R`, shape ``(dim, dim)``."""
        return self._rotation

    @cached_property
    def _rotation(self) -> Tensor:  # computed once: a test's loss is evaluated every step
        if not self.rotated:
            return torch.eye(self.dim, dtype=torch.float64)
        generator = torch.Generator().manual_seed(_ROTATION_SEED + self.dim)
        matrix = torch.randn(self.dim, self.dim, generator=generator, dtype=torch.float64)
        q, r = torch.linalg.qr(matrix)
        return q * torch.sign(torch.diagonal(r))  # the sign fix makes Q Haar-distributed

    def optimum(self, step: int) -> Tensor:
        """The minimizer :math:`\\mu_t` at step ``step``, shape ``(dim,)``."""
        return torch.full((self.dim,), self.drift * step, dtype=torch.float64)

    def _coordinates(self, x: Tensor, step: int) -> Tensor:
        return (x - self.optimum(step)) @ self.rotation().T  # (runs, dim)

    def sample_loss(self, x: Tensor, draws: Tensor, step: int) -> Tensor:
        """The loss of one sample per run: ``x`` and ``draws`` of shape ``(runs, dim)``."""
        z = self._coordinates(x, step)
        if self.noise.where == "shift":
            values = self.shape.function(z - draws)
        else:
            values = draws * self.shape.function(z)
        return self.scale * (values * self.coefficients()).sum(dim=-1)  # (runs,)

    def loss_gap(self, x: Tensor, step: int) -> Tensor:
        """The noise-free loss minus its minimum, per run: ``x`` of shape ``(runs, dim)``."""
        values = self.shape.function(self._coordinates(x, step))
        return self.scale * (values * self.coefficients()).sum(dim=-1)  # (runs,)


def _build_unit_tests() -> dict[str, UnitTest]:
    shapes, noises = SHAPES, NOISES
    tests = [UnitTest(shapes[s], noises[n]) for s, n in itertools.product(shapes, noises)]
    tests += [
        UnitTest(shapes[s], noises[n], scale=scale)
        for s, n, scale in itertools.product(
            ("quadratic", "absolute"), ("none", "additive-gauss"), (0.1, 10.0)
        )
    ]
    tests += [
        UnitTest(shapes[s], noises[n], dim=2, condition=100.0, rotated=rotated)
        for s, n, rotated in itertools.product(
            ("quadratic", "absolute", "gauss"), ("none", "additive-gauss"), (False, True)
        )
    ]
    tests += [
        UnitTest(shapes["quadratic"], noises[n], dim=10, condition=100.0, rotated=True)
        for n in ("none", "additive-gauss", "mask")
    ]
    tests += [
        UnitTest(shapes[s], noises[n], drift=0.01)
        for s, n in itertools.product(("quadratic", "absolute"), ("none", "additive-gauss"))
    ]
    return {test.name: test for test in tests}


UNIT_TESTS: dict[str, UnitTest] = _build_unit_tests()
UNIT_TEST_NAMES: tuple[str, ...] = tuple(UNIT_TESTS)


def get_unit_test(name: str) -> UnitTest:
    """The registered unit test called ``name`` (one of :data:`UNIT_TEST_NAMES`).

    Example:
        >>> from gradwise.bench import get_unit_test
        >>> get_unit_test("gauss/mask/scale=1/dim=1").noise.where
        'factor'
    """
    check("name", "get_unit_test", name, OneOf(UNIT_TEST_NAMES))
    return UNIT_TESTS[name]


def make_unit_test(
    shape: str,
    noise: str = "none",
    *,
    scale: float = 1.0,
    dim: int = 1,
    condition: float = 1.0,
    rotated: bool = False,
    drift: float = 0.0,
    start: float = 2.0,
) -> UnitTest:
    """A unit test outside the registry, from a shape and a noise name, checked.

    Example:
        >>> from gradwise.bench import make_unit_test
        >>> make_unit_test("laplace", "additive-cauchy", dim=3, condition=10.0).name
        'laplace/additive-cauchy/scale=1/dim=3/kappa=10'
    """
    owner = "make_unit_test"
    check("shape", owner, shape, OneOf(tuple(SHAPES)))
    check("noise", owner, noise, OneOf(tuple(NOISES)))
    check("scale", owner, scale, POSITIVE)
    check("dim", owner, dim, POSITIVE_INT)
    check("condition", owner, condition, Interval(low=1.0, finite=True))
    check("rotated", owner, rotated, OneOf((True, False)))
    check("drift", owner, drift, NON_NEGATIVE)
    check("start", owner, start, Interval())
    return UnitTest(
        SHAPES[shape], NOISES[noise], float(scale), dim, float(condition), rotated,
        float(drift), float(start),
    )  # fmt: skip
