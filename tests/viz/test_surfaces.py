"""The test surfaces: formulas, known critical points and values, against closed-form facts."""

import math

import pytest
import torch

from gradwise.viz import SURFACE_NAMES, CriticalPoint, get_surface

ALL_POINTS = [
    (name, point) for name in SURFACE_NAMES for point in get_surface(name).critical_points
]


@pytest.mark.parametrize(("name", "point"), ALL_POINTS)
def test_listed_critical_points_have_zero_gradient_and_the_listed_value(name, point):
    surface = get_surface(name)
    location = torch.tensor(point.location, dtype=torch.float64, requires_grad=True)
    value = surface(location)
    (gradient,) = torch.autograd.grad(value, location)
    assert gradient.abs().max().item() < 1e-9
    assert value.item() == pytest.approx(point.value, abs=1e-9)


@pytest.mark.parametrize(("name", "point"), ALL_POINTS)
def test_the_hessian_agrees_with_the_kind_of_point(name, point):
    surface = get_surface(name)
    hessian = torch.autograd.functional.hessian(
        surface, torch.tensor(point.location, dtype=torch.float64)
    )
    eigenvalues = torch.linalg.eigvalsh(hessian)
    if point.kind.endswith("minimum"):
        assert eigenvalues.min() > 0
    elif point.kind == "local maximum":
        assert eigenvalues.max() < 0
    elif name == "monkey_saddle":  # degenerate: a zero Hessian, but f(t, 0) = t^3 changes sign
        assert eigenvalues.abs().max() < 1e-12
        assert surface(torch.tensor([0.1, 0.0])) > 0 > surface(torch.tensor([-0.1, 0.0]))
    else:
        assert eigenvalues.min() < 0 < eigenvalues.max()


# Values from the literature, written out independently of the surfaces' data.
LITERATURE = [
    ("rosenbrock", (1.0, 1.0), 0.0),
    ("beale", (3.0, 0.5), 0.0),
    ("himmelblau", (3.0, 2.0), 0.0),
    ("himmelblau", (-2.805118, 3.131312), 0.0),
    ("himmelblau", (-3.779310, -3.283186), 0.0),
    ("himmelblau", (3.584428, -1.848126), 0.0),
    ("styblinski_tang", (-2.903534, -2.903534), -2 * 39.16617),
    ("saddle", (0.0, 0.0), 0.0),
    ("monkey_saddle", (0.0, 0.0), 0.0),
    ("quadratic", (0.0, 0.0), 0.0),
]


@pytest.mark.parametrize(("name", "location", "value"), LITERATURE)
def test_known_optima_from_the_literature_are_listed(name, location, value):
    surface = get_surface(name)
    nearest = min(surface.critical_points, key=lambda p: math.dist(p.location, location))
    assert math.dist(nearest.location, location) < 1e-5
    assert nearest.value == pytest.approx(value, abs=1e-4)


def test_global_minimum_is_the_lowest_and_the_formulas_match_the_functions():
    styblinski = get_surface("styblinski_tang")
    assert styblinski.global_minimum == CriticalPoint(
        (-2.903534027771177, -2.903534027771177), -78.33233140754282, "global minimum"
    )
    assert len(styblinski.minima) == 4
    assert get_surface("saddle").global_minimum is None
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 50, generator=generator, dtype=torch.float64)
    # The formulas written out here, against the surfaces' functions.
    expected = {
        "quadratic": 0.5 * (x**2 + 20 * y**2),
        "rosenbrock": (1 - x) ** 2 + 100 * (y - x**2) ** 2,
        "beale": (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2,
        "himmelblau": (x**2 + y - 11) ** 2 + (x + y**2 - 7) ** 2,
        "saddle": x**2 - y**2,
        "monkey_saddle": x**3 - 3 * x * y**2,
        "styblinski_tang": 0.5 * ((x**4 - 16 * x**2 + 5 * x) + (y**4 - 16 * y**2 + 5 * y)),
    }
    assert set(expected) == set(SURFACE_NAMES)
    for name, values in expected.items():
        torch.testing.assert_close(get_surface(name)(torch.stack([x, y], dim=-1)), values)


def test_every_listed_point_and_start_lies_in_the_domain():
    for name in SURFACE_NAMES:
        surface = get_surface(name)
        (x_low, x_high), (y_low, y_high) = surface.domain
        for x, y in [p.location for p in surface.critical_points] + [surface.start]:
            assert x_low <= x <= x_high, name
            assert y_low <= y <= y_high, name


def test_unknown_surface_names_raise_the_standard_error():
    with pytest.raises(
        ValueError,
        match=r"^The 'name' parameter of get_surface must be one of 'quadratic', .*Got 'sphere' instead\.$",
    ):
        get_surface("sphere")
