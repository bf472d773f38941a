"""Interpolation and slices against independent oracles; the model restored bit for bit."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradwise.data import Dataset
from gradwise.landscape import (
    Landscape1D,
    Landscape2D,
    interpolate,
    random_directions,
    slice_1d,
    slice_2d,
)
from gradwise.regularize import Penalty, l2_penalty
from tests.landscape.setups import (
    classification_data,
    classifier,
    conv_net,
    trained_buffers,
)


def _eval_loss(
    model: nn.Module, params: dict[str, torch.Tensor], data: tuple[torch.Tensor, torch.Tensor]
) -> float:
    """The oracle: a copy of the model with ``params`` loaded, in eval mode, one forward."""
    work = copy.deepcopy(model).eval()
    with torch.no_grad():
        for name, parameter in work.named_parameters():
            parameter.copy_(params[name])
        return F.cross_entropy(work(data[0]), data[1]).item()


def _two_solutions() -> tuple[nn.Module, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    data = classification_data()
    model = classifier(0)
    trained_buffers(model, data[0])
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    end = {name: p.detach().clone() for name, p in classifier(1).named_parameters()}
    return model, start, end


def test_interpolation_endpoints_and_midpoint_equal_the_losses_at_those_points() -> None:
    data = classification_data()
    model, start, end = _two_solutions()
    line = interpolate(model, start, end, F.cross_entropy, data, num_points=9, extend=0.5)
    assert isinstance(line, Landscape1D)
    np.testing.assert_allclose(line.coordinates, np.linspace(-0.5, 1.5, 9))
    at = dict(zip(line.coordinates.tolist(), line.losses.tolist(), strict=True))
    assert at[0.0] == pytest.approx(_eval_loss(model, start, data), rel=1e-12)
    assert at[1.0] == pytest.approx(_eval_loss(model, end, data), rel=1e-12)
    middle = {name: (start[name] + end[name]) / 2 for name in start}
    assert at[0.5] == pytest.approx(_eval_loss(model, middle, data), rel=1e-12)
    beyond = {name: 1.5 * end[name] - 0.5 * start[name] for name in start}
    assert at[1.5] == pytest.approx(_eval_loss(model, beyond, data), rel=1e-10)


def test_interpolating_state_dicts_carries_the_batchnorm_statistics_along() -> None:
    data = classification_data()
    model_a, model_b = classifier(0), classifier(1)
    trained_buffers(model_a, data[0])
    trained_buffers(model_b, 3.0 * data[0] + 1.0)  # very different running statistics
    oracle = []
    for source in (model_a, model_b):
        with torch.no_grad():
            oracle.append(F.cross_entropy(source.eval()(data[0]), data[1]).item())
    model_a.train()
    line = interpolate(model_a, model_a.state_dict(), model_b.state_dict(), F.cross_entropy,
                       data, num_points=3, extend=0.0)  # fmt: skip
    np.testing.assert_allclose(line.losses[[0, 2]], oracle, rtol=1e-12)
    middle = classifier(0)
    merged = {k: (v + model_b.state_dict()[k]) / 2 if v.is_floating_point() else v
              for k, v in model_a.state_dict().items()}  # fmt: skip
    middle.load_state_dict(merged)
    with torch.no_grad():
        expected = F.cross_entropy(middle.eval()(data[0]), data[1]).item()
    assert line.losses[1] == pytest.approx(expected, rel=1e-12)
    # parameters only: the model's own statistics all along the line
    only = interpolate(model_a, dict(model_a.named_parameters()),
                       dict(model_b.named_parameters()), F.cross_entropy, data,
                       num_points=3, extend=0.0)  # fmt: skip
    own = {k: v for k, v in model_b.state_dict().items() if "running" not in k}
    assert only.losses[2] == pytest.approx(_eval_loss(model_a, own, data), rel=1e-12)
    assert only.losses[2] != pytest.approx(oracle[1], rel=1e-3)


def test_statistics_are_held_at_the_nearer_end_past_the_interpolated_range() -> None:
    # QA: extrapolated, B's small running variances minus A's turned negative at alpha 1.5
    # and the loss was NaN. The weights are extrapolated, the statistics held at B's.
    data = classification_data()
    model_a, model_b = classifier(0), classifier(1)
    trained_buffers(model_a, 10.0 * data[0])  # large running variances
    trained_buffers(model_b, 0.1 * data[0])  # small ones
    a, b = model_a.state_dict(), model_b.state_dict()
    line = interpolate(model_a, a, b, F.cross_entropy, data, num_points=5, extend=0.5)
    assert np.isfinite(line.losses).all(), line.losses
    at = dict(zip(line.coordinates.tolist(), line.losses.tolist(), strict=True))
    for alpha, statistics in ((1.5, b), (-0.5, a)):
        oracle = classifier(0)
        oracle.load_state_dict(
            {
                k: (1 - alpha) * a[k] + alpha * b[k]
                if "running" not in k and v.is_floating_point()
                else statistics[k]
                for k, v in a.items()
            }  # fmt: skip
        )
        with torch.no_grad():
            expected = F.cross_entropy(oracle.eval()(data[0]), data[1]).item()
        assert at[alpha] == pytest.approx(expected, rel=1e-10)


def test_interpolation_always_contains_both_endpoints_and_accepts_modules() -> None:
    data = classification_data()
    model_a, model_b = classifier(0), classifier(1)
    line = interpolate(model_a, model_a, model_b.state_dict(), "cross_entropy", data,
                       num_points=4, extend=0.3)  # fmt: skip
    assert {0.0, 1.0} <= set(line.coordinates.tolist())
    assert len(line.coordinates) == 6  # 4 grid points + 0 and 1
    assert np.all(np.diff(line.coordinates) > 0)


def test_a_2d_slice_of_a_quadratic_matches_the_closed_form() -> None:
    # Least squares is exactly quadratic in (w, b): L(theta + v) = L + g.v + v.H.v / 2 with
    # g = 2/N Xa^T (Xa theta - y) and H = 2/N Xa^T Xa, Xa = [X, 1]. Computed in numpy.
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(40, 4, generator=generator, dtype=torch.float64)
    targets = torch.randn(40, 1, generator=generator, dtype=torch.float64)
    model = nn.Linear(4, 1).double()
    for filter_normalize in (True, False):
        directions = random_directions(model, seed=2, filter_normalize=filter_normalize)
        surface = slice_2d(model, F.mse_loss, (inputs, targets), directions, span=2.0,
                           resolution=7)  # fmt: skip
        assert isinstance(surface, Landscape2D)
        x = np.hstack([inputs.numpy(), np.ones((40, 1))])
        y = targets.numpy()[:, 0]
        theta = np.concatenate([model.weight.detach().numpy()[0], model.bias.detach().numpy()])
        d1, d2 = (np.concatenate([d["weight"].numpy()[0], d["bias"].numpy()]) for d in directions)
        hessian = 2.0 / 40 * x.T @ x
        gradient = 2.0 / 40 * x.T @ (x @ theta - y)
        loss = np.mean((x @ theta - y) ** 2)
        expected = np.empty((7, 7))
        for i, alpha in enumerate(np.linspace(-2, 2, 7)):
            for j, beta in enumerate(np.linspace(-2, 2, 7)):
                v = alpha * d1 + beta * d2
                expected[i, j] = loss + gradient @ v + 0.5 * v @ hessian @ v
        np.testing.assert_allclose(surface.losses, expected, rtol=1e-10)
        np.testing.assert_allclose(surface.alphas, np.linspace(-2, 2, 7))


def test_a_1d_slice_of_a_quadratic_is_the_parabola_along_the_direction() -> None:
    generator = torch.Generator().manual_seed(5)
    inputs = torch.randn(30, 3, generator=generator, dtype=torch.float64)
    targets = torch.randn(30, 1, generator=generator, dtype=torch.float64)
    model = nn.Linear(3, 1, bias=False).double()
    (direction,) = random_directions(model, num=1)
    curve = slice_1d(model, F.mse_loss, (inputs, targets), direction, span=1.5, resolution=9)
    x, y = inputs.numpy(), targets.numpy()[:, 0]
    w, d = model.weight.detach().numpy()[0], direction["weight"].numpy()[0]
    expected = [np.mean((x @ (w + t * d) - y) ** 2) for t in np.linspace(-1.5, 1.5, 9)]
    np.testing.assert_allclose(curve.losses, expected, rtol=1e-12)


@pytest.mark.parametrize("make_model", [classifier, conv_net])
def test_batched_evaluation_equals_one_point_at_a_time(
    make_model: Callable[..., nn.Module],
) -> None:
    channels = 2 if make_model is conv_net else None
    inputs, targets = classification_data(size=13, channels=channels)
    model = make_model()
    trained_buffers(model, inputs)
    directions = random_directions(model)
    reference = slice_2d(model, "cross_entropy", (inputs, targets), directions, resolution=5,
                         points_per_batch=1)  # fmt: skip
    for points_per_batch in (7, 25):  # uneven chunks, then all points in one call
        batched = slice_2d(model, "cross_entropy", (inputs, targets), directions,
                           resolution=5, points_per_batch=points_per_batch)  # fmt: skip
        np.testing.assert_allclose(batched.losses, reference.losses, rtol=1e-12)
    other = make_model(seed=1)
    trained_buffers(other, 2.0 * inputs)  # interpolated BatchNorm statistics, vmapped too
    lines = [
        interpolate(
            model,
            model,
            other,
            "cross_entropy",
            (inputs, targets),
            num_points=9,
            points_per_batch=points_per_batch,
        ).losses  # fmt: skip
        for points_per_batch in (1, 4)
    ]
    np.testing.assert_allclose(lines[1], lines[0], rtol=1e-12)
    # data batches of 5, 5 and 3 samples give the sample-weighted mean of one big batch
    split = slice_2d(model, "cross_entropy", Dataset(inputs, targets), directions,
                     resolution=5, batch_size=5)  # fmt: skip
    np.testing.assert_allclose(split.losses, reference.losses, rtol=1e-12)


def _sum_of_squares(model: nn.Module) -> Callable[..., torch.Tensor]:
    """Cross-entropy plus 0.3 times the squared norm of every parameter, read from ``model``
    when the loss is called."""

    def loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets) + 0.3 * sum(
            p.square().sum() for p in model.parameters()
        )

    return loss


def _with_l2_penalty(model: nn.Module) -> Callable[..., torch.Tensor]:
    def loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets) + l2_penalty(model, 0.3)

    return loss


def _penalized_oracle(
    make_loss: Callable[[nn.Module], Callable[..., torch.Tensor]],
    model: nn.Module,
    params: dict[str, torch.Tensor],
    data: tuple[torch.Tensor, torch.Tensor],
) -> float:
    """The oracle: ``params`` copied into a copy of the model, whose own loss is computed."""
    work = copy.deepcopy(model).eval()
    with torch.no_grad():
        for name, parameter in work.named_parameters():
            parameter.copy_(params[name])
    return make_loss(work)(work(data[0]), data[1]).item()


@pytest.mark.parametrize("make_loss", [_sum_of_squares, _with_l2_penalty])
def test_a_penalty_that_loss_fn_reads_from_the_model_is_taken_at_each_point(
    make_loss: Callable[[nn.Module], Callable[..., torch.Tensor]],
) -> None:
    # The loss was called after functional_call had put the model's own parameters back,
    # so the penalty was the one at the center at every point: a constant.
    data = classification_data()
    model = classifier(0)
    trained_buffers(model, data[0])
    loss_fn = make_loss(model)
    center = {name: p.detach().clone() for name, p in model.named_parameters()}
    first, second = random_directions(model, seed=3)
    curve = slice_1d(model, loss_fn, data, first, span=1.0, resolution=3)
    for t, value in zip(curve.coordinates, curve.losses, strict=True):
        point = {name: center[name] + t * first[name] for name in center}
        assert value == pytest.approx(_penalized_oracle(make_loss, model, point, data), rel=1e-12)
    surface = slice_2d(model, loss_fn, data, (first, second), span=1.0, resolution=3)
    corner = {name: center[name] - first[name] + second[name] for name in center}
    expected = _penalized_oracle(make_loss, model, corner, data)
    assert surface.losses[0, 2] == pytest.approx(expected, rel=1e-12)
    other = {name: p.detach().clone() for name, p in classifier(1).named_parameters()}
    line = interpolate(model, center, other, loss_fn, data, num_points=3, extend=0.0)
    expected = _penalized_oracle(make_loss, model, other, data)
    assert line.losses[-1] == pytest.approx(expected, rel=1e-12)
    assert line.losses[-1] != pytest.approx(line.losses[0], rel=1e-3)


def test_a_penalty_read_from_the_model_is_the_same_evaluated_several_points_at_a_time() -> None:
    data = classification_data()
    model = classifier(0)
    directions = random_directions(model, seed=3)
    loss_fn = _sum_of_squares(model)
    reference = slice_2d(model, loss_fn, data, directions, resolution=3, points_per_batch=1)
    batched = slice_2d(model, loss_fn, data, directions, resolution=3, points_per_batch=4)
    np.testing.assert_allclose(batched.losses, reference.losses, rtol=1e-12)


def _loss_plus_weight_decay(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    data: tuple[torch.Tensor, torch.Tensor],
    weights: tuple[str, ...],
) -> float:
    """The oracle of cross-entropy + l2_penalty(model, 0.3): the loss of a copy of the model
    with ``params`` loaded plus 0.3 times the squares of the named weights, written out."""
    decay = 0.3 * sum(float(params[name].square().sum()) for name in weights)
    return _eval_loss(model, params, data) + decay


def test_l2_penalty_of_the_model_is_the_same_evaluated_several_points_at_a_time() -> None:
    # Before, under vmap every tensor reported requires_grad=False, penalized_parameters
    # chose by it and the penalty vanished: points_per_batch > 1 was refused. Now the
    # choice comes from the module's structure: the two Linear weights, not the biases or
    # BatchNorm's scale and shift.
    data = classification_data()
    model = classifier(0)
    trained_buffers(model, data[0])
    loss_fn = _with_l2_penalty(model)
    first, second = random_directions(model, seed=3)
    center = {name: p.detach().clone() for name, p in model.named_parameters()}
    reference = slice_2d(model, loss_fn, data, (first, second), resolution=5, points_per_batch=1)
    for points_per_batch in (4, 25):  # uneven chunks, then all points in one call
        batched = slice_2d(model, loss_fn, data, (first, second), resolution=5,
                           points_per_batch=points_per_batch)  # fmt: skip
        np.testing.assert_allclose(batched.losses, reference.losses, rtol=1e-12)
    for i, j in ((0, 0), (2, 2), (4, 1)):
        alpha, beta = reference.alphas[i], reference.betas[j]
        point = {name: center[name] + alpha * first[name] + beta * second[name] for name in center}
        expected = _loss_plus_weight_decay(model, point, data, ("0.weight", "4.weight"))
        assert batched.losses[i, j] == pytest.approx(expected, rel=1e-12)
    curve = slice_1d(model, loss_fn, data, first, resolution=5, points_per_batch=5)
    np.testing.assert_allclose(curve.losses, reference.losses[:, 2], rtol=1e-12)


def test_a_penalty_that_tells_frozen_weights_apart_is_refused_several_points_at_a_time() -> None:
    # A frozen weight: one point at a time, l2_penalty(model) leaves it out, as it does on
    # the model. Under vmap no parameter can be told frozen (requires_grad is False for
    # all), so the first point is evaluated both ways, and a loss that differs is refused.
    data = classification_data()
    model = classifier(0)
    model[0].weight.requires_grad_(False)
    direction = random_directions(model, num=1, seed=3)[0]
    center = {name: p.detach().clone() for name, p in model.named_parameters()}
    curve = slice_1d(model, _with_l2_penalty(model), data, direction, resolution=3,
                     points_per_batch=1)  # fmt: skip
    for t, value in zip(curve.coordinates, curve.losses, strict=True):
        point = {name: center[name] + t * direction[name] for name in center}
        expected = _loss_plus_weight_decay(model, point, data, ("4.weight",))
        assert value == pytest.approx(expected, rel=1e-12)

    def by_flag(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        trainable = [p for p in model.parameters() if p.requires_grad]
        return F.cross_entropy(outputs, targets) + 0.3 * sum(p.square().sum() for p in trainable)

    for loss_fn in (_with_l2_penalty(model), by_flag):
        with pytest.raises(ValueError, match="must not depend on which parameters are frozen"):
            slice_1d(model, loss_fn, data, direction, resolution=3, points_per_batch=3)


@pytest.mark.parametrize("points_per_batch", [1, 4])
def test_a_penalty_on_tensors_held_from_before_the_call_is_refused(points_per_batch: int) -> None:
    data = classification_data()
    model = classifier(0)
    direction = random_directions(model, num=1)[0]
    held = list(model.parameters())
    penalty = Penalty(model, l2=0.3)
    before = _snapshot(model)
    losses = [
        lambda outputs, targets: F.cross_entropy(outputs, targets) + held[0].square().sum(),
        lambda outputs, targets: F.cross_entropy(outputs, targets) + penalty(),
    ]
    for loss_fn in losses:
        with pytest.raises(ValueError, match="^The 'loss_fn' parameter of slice_1d must read"):
            slice_1d(model, loss_fn, data, direction, resolution=5,
                     points_per_batch=points_per_batch)  # fmt: skip
        _assert_same(model, before)


def _snapshot(model: nn.Module) -> dict[str, object]:
    return {
        "state": {k: v.clone() for k, v in model.state_dict(keep_vars=False).items()},
        "grads": {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None},
        "modes": [module.training for module in model.modules()],
        "rng": torch.get_rng_state(),
    }


def _assert_same(model: nn.Module, before: dict[str, object]) -> None:
    after = _snapshot(model)
    assert after["modes"] == before["modes"]
    assert torch.equal(after["rng"], before["rng"])  # type: ignore[arg-type]
    for key in ("state", "grads"):
        old, new = before[key], after[key]
        assert old.keys() == new.keys()  # type: ignore[attr-defined]
        for name in old:  # type: ignore[attr-defined]
            assert torch.equal(old[name], new[name]), name  # type: ignore[index]
            assert old[name].dtype == new[name].dtype  # type: ignore[index]


def test_the_model_is_left_exactly_as_it_was() -> None:
    data = classification_data()
    model = classifier(0)
    trained_buffers(model, data[0])  # training mode, BatchNorm statistics moved
    model[3].eval()  # a mixed mode: dropout alone in eval mode
    F.cross_entropy(model(data[0]), data[1]).backward()  # existing .grad
    model[0].bias.grad = None  # and one parameter without
    before = _snapshot(model)
    other = {name: p.detach() + 1.0 for name, p in model.named_parameters()}
    interpolate(model, model, other, F.cross_entropy, data, num_points=5)
    _assert_same(model, before)
    directions = random_directions(model)
    slice_1d(model, F.cross_entropy, data, directions[0], resolution=5)
    _assert_same(model, before)
    slice_2d(model, F.cross_entropy, data, directions, resolution=5)
    _assert_same(model, before)
    assert model.training
    assert model[1].training
    assert not model[3].training


def test_the_model_is_restored_when_the_loss_fails() -> None:
    data = classification_data()
    model = classifier(0)
    before = _snapshot(model)

    def broken(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        slice_1d(model, broken, data, random_directions(model, num=1)[0], resolution=3)
    _assert_same(model, before)


def test_plots_are_png_images() -> None:
    data = classification_data()
    model = classifier(0)
    directions = random_directions(model)
    surface = slice_2d(model, "cross_entropy", data, directions, span=30.0, resolution=5)
    assert surface.losses.max() / surface.losses.min() > 100  # the log-level path
    curve = interpolate(model, model, classifier(1), "cross_entropy", data, num_points=5)
    for png in (surface.plot_contour_png(), surface.plot_surface_png(), curve.plot_png()):
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        assert len(png) > 5000
    flat = Landscape2D(np.linspace(-1, 1, 3), np.linspace(-1, 1, 3), np.ones((3, 3)))
    flat.losses[0, 0] = np.inf
    assert flat.plot_contour_png().startswith(b"\x89PNG")
    assert flat.plot_surface_png().startswith(b"\x89PNG")


def test_importing_the_package_does_not_import_matplotlib() -> None:
    import subprocess
    import sys

    code = "import sys, gradwise.landscape; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)  # fmt: skip
    assert result.stdout.strip() == "False"


def test_bad_arguments_are_reported_in_the_one_format() -> None:
    data = classification_data()
    model = classifier(0)
    directions = random_directions(model)
    cases = [
        (lambda: interpolate(model, model, model, "ce", data),
         "The 'loss_fn' parameter of interpolate must be one of 'cross_entropy'"),
        (lambda: interpolate(model, model, model, F.cross_entropy, data, num_points=1),
         "The 'num_points' parameter of interpolate must be an int >= 2. Got 1 instead."),
        (lambda: interpolate(model, model, model, F.cross_entropy, data, extend=-1.0),
         "The 'extend' parameter of interpolate must be a finite float >= 0. Got -1.0 instead."),
        (lambda: interpolate(model, model, model, F.cross_entropy, data, extend=np.inf),
         "The 'extend' parameter of interpolate must be a finite float >= 0. Got inf instead."),
        (lambda: interpolate(model, {}, model, F.cross_entropy, data),
         "The 'params_a' parameter of interpolate must have a tensor for every parameter"),
        (lambda: slice_1d(model, F.cross_entropy, data, directions[0], span=0.0),
         "The 'span' parameter of slice_1d must be a finite float > 0. Got 0.0 instead."),
        (lambda: slice_2d(model, F.cross_entropy, data, directions, span=np.inf),
         "The 'span' parameter of slice_2d must be a finite float > 0. Got inf instead."),
        (lambda: slice_2d(model, F.cross_entropy, data, directions[:1]),
         "The 'directions' parameter of slice_2d must be a sequence of two directions"),
        (lambda: slice_2d(model, F.cross_entropy, data, directions, resolution=1),
         "The 'resolution' parameter of slice_2d must be an int >= 2. Got 1 instead."),
        (lambda: slice_2d(model, F.cross_entropy, data, directions, points_per_batch=0),
         "The 'points_per_batch' parameter of slice_2d must be an int >= 1. Got 0 instead."),
        (lambda: slice_2d(classifier(0)[0], F.cross_entropy, data, directions),
         "The 'directions' parameter of slice_2d must have a tensor for every parameter"),
        (lambda: slice_2d(nn.ReLU(), F.cross_entropy, data, directions),
         "The 'model' parameter of slice_2d must have parameters."),
    ]  # fmt: skip
    for call, message in cases:
        with pytest.raises(ValueError, match="^The '") as caught:
            call()
        assert str(caught.value).startswith(message), str(caught.value)
    with pytest.raises(TypeError, match="The 'data' parameter of slice_1d must be"):
        slice_1d(model, F.cross_entropy, [1, 2], directions[0])  # type: ignore[arg-type]
    wrong = {name: t[..., :1] for name, t in directions[0].items()}
    with pytest.raises(ValueError, match="must match the shape of '0.weight', \\(8, 3\\)"):
        slice_1d(model, F.cross_entropy, data, wrong)


def test_a_batch_without_samples_is_refused_instead_of_turning_every_loss_into_nan() -> None:
    # A batch of 0 samples has a mean loss of 0 / 0 = NaN, and its weight 0 times NaN made
    # the sample-weighted mean NaN at every point, with no error.
    inputs, targets = classification_data()
    model = classifier(0)
    (direction,) = random_directions(model, num=1)
    empty = (inputs[:0], targets[:0])
    for data in ([(inputs, targets), empty], empty, Dataset(inputs[:0].float(), targets[:0])):
        with pytest.raises(ValueError, match="^The 'data' parameter of slice_1d must hold"):
            slice_1d(model, F.cross_entropy, data, direction, resolution=3)


@pytest.mark.parametrize("points_per_batch", [1, 3])
def test_a_loss_that_is_not_one_number_is_refused_in_the_one_format(points_per_batch: int) -> None:
    # reduction="none" failed on a broadcast deep in the evaluator; a float on .grad_fn or
    # inside vmap.
    data = classification_data()
    model = classifier(0)
    (direction,) = random_directions(model, num=1)
    losses: list[tuple[Callable[[torch.Tensor, torch.Tensor], object], str]] = [
        (lambda out, y: F.cross_entropy(out, y, reduction="none"), "a tensor of shape (16,)"),
        (lambda out, y: 1.0, "a float"),
    ]
    for loss_fn, shown in losses:
        with pytest.raises(ValueError, match="^The 'loss_fn' parameter") as caught:
            slice_1d(model, loss_fn, data, direction, resolution=3,  # type: ignore[arg-type]
                     points_per_batch=points_per_batch)  # fmt: skip
        assert str(caught.value) == (
            "The 'loss_fn' parameter of slice_1d must return a scalar tensor (a mean-reduced "
            f"loss). Got {shown} instead."
        )


@pytest.mark.parametrize(("num_points", "extend"), [(8, 0.2), (13, 0.1), (10, 0.4)])
def test_a_grid_point_that_rounds_next_to_an_endpoint_is_that_endpoint(
    num_points: int, extend: float
) -> None:
    # linspace(-0.2, 1.2, 8) holds 2.8e-17 where it means 0: the endpoint was added beside
    # it, a near-duplicate point (num_points + 1 evaluations, one of them not exactly A).
    data = classification_data()
    model_a, model_b = classifier(0), classifier(1)
    line = interpolate(model_a, model_a, model_b, "cross_entropy", data,
                       num_points=num_points, extend=extend)  # fmt: skip
    assert len(line.coordinates) == num_points
    assert {0.0, 1.0} <= set(line.coordinates.tolist())
    np.testing.assert_allclose(np.diff(line.coordinates), (1 + 2 * extend) / (num_points - 1))


class _SharedBlock(nn.Module):
    """One Linear + BatchNorm block applied twice, registered under two names (as ALBERT
    shares layers), and a separate head."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Tanh())
        self.again = self.block
        self.head = nn.Linear(3, 4)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.again(self.block(inputs)))


def _shared_block(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return _SharedBlock().double()


@pytest.mark.parametrize("points_per_batch", [1, 3])
def test_a_submodule_registered_twice_is_sliced_and_the_model_left_as_it_was(
    points_per_batch: int,
) -> None:
    # torch.func.functional_call's weight tying swapped the shared block's weight in once
    # per name and restored the first swap's stand-in: the model kept plain tensors with
    # the last point's values, and the next points' losses were taken from there.
    data = classification_data()
    model, other = _shared_block(0), _shared_block(1)
    trained_buffers(model, data[0])
    trained_buffers(other, 2.0 * data[0])  # other running statistics, carried along too
    before = _snapshot(model)
    parameters = dict(model.named_parameters())
    (direction,) = random_directions(model, num=1)
    curve = slice_1d(model, F.cross_entropy, data, direction, span=1.0, resolution=3,
                     points_per_batch=points_per_batch)  # fmt: skip
    assert all(model.get_parameter(name) is p for name, p in parameters.items())
    _assert_same(model, before)
    oracle = []
    for t in (-1.0, 0.0, 1.0):
        moved = {name: p.detach() + t * direction[name] for name, p in parameters.items()}
        oracle.append(_eval_loss(model, moved, data))
    np.testing.assert_allclose(curve.losses, oracle, rtol=1e-12)

    line = interpolate(model, model.state_dict(), other.state_dict(), F.cross_entropy, data,
                       num_points=2, extend=0.0, points_per_batch=points_per_batch)  # fmt: skip
    _assert_same(model, before)
    with torch.no_grad():
        ends = [F.cross_entropy(m.eval()(data[0]), data[1]).item() for m in (model, other)]
    model.train()
    np.testing.assert_allclose(line.losses, ends, rtol=1e-12)


def test_a_model_on_the_meta_device_is_refused_in_the_one_format() -> None:
    # A meta tensor has a shape and no values: directions came back empty-valued, and a
    # slice failed deep in torch with "Cannot copy out of meta tensor; no data!".
    data = classification_data()
    with torch.device("meta"):
        meta = classifier(0)
    message = "The 'model' parameter of {} must hold its weights in memory. Got '0.weight' on"
    with pytest.raises(ValueError, match="^" + message.format("random_directions")):
        random_directions(meta)
    model = classifier(0)
    (direction,) = random_directions(model, num=1)
    with pytest.raises(ValueError, match="^" + message.format("slice_1d")):
        slice_1d(meta, F.cross_entropy, data, direction, resolution=3)
    meta_direction = {name: t.to("meta") for name, t in direction.items()}
    with pytest.raises(ValueError, match="^The 'direction' parameter of slice_1d must hold val"):
        slice_1d(model, F.cross_entropy, data, meta_direction, resolution=3)


def test_inputs_and_targets_of_different_lengths_are_reported_as_such() -> None:
    # The pair was refused as "must be a Dataset, an (inputs, targets) pair of tensors or
    # a non-empty list of such pairs. Got tuple instead", though it was a pair of tensors.
    inputs, targets = classification_data()
    model = classifier(0)
    (direction,) = random_directions(model, num=1)
    with pytest.raises(ValueError, match="^The .data. parameter of slice_1d must pair") as caught:
        slice_1d(model, F.cross_entropy, (inputs, targets[:5]), direction, resolution=3)
    assert str(caught.value) == (
        "The 'data' parameter of slice_1d must pair each input with one target. Got 16 "
        "inputs and 5 targets instead; pass as many targets as inputs."
    )
    batches = [(inputs, targets), (inputs[:4], targets[:3])]
    with pytest.raises(ValueError, match="Got 4 inputs and 3 targets in batch 2 of 2 instead"):
        slice_1d(model, F.cross_entropy, batches, direction, resolution=3)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_span_whose_grid_overflows_is_refused_and_the_largest_one_works(
    dtype: torch.dtype,
) -> None:
    # 1e308 overflowed np.linspace (a RuntimeWarning, then inf and NaN coordinates); past
    # the float32 range a coordinate was cast to inf and every loss but the center's was
    # NaN, with no error.
    data = tuple(t.to(dtype) if t.is_floating_point() else t for t in classification_data())
    model = classifier(0).to(dtype)
    directions = random_directions(model)
    largest = (
        float(np.finfo(np.float64).max) / 2 if dtype == torch.float64 else 3.4028234663852886e38
    )
    reason = (
        "the grid's width (2 * span) is finite in float64"
        if dtype == torch.float64
        else "the grid's end (span) is finite in the model's float32"
    )
    too_large = np.nextafter(largest, np.inf)
    calls = [
        ("slice_1d", lambda span: slice_1d(model, F.cross_entropy, data, directions[0], span=span,
                                           resolution=3)),
        ("slice_2d", lambda span: slice_2d(model, F.cross_entropy, data, directions, span=span,
                                           resolution=3)),
    ]  # fmt: skip
    for owner, call in calls:
        with pytest.raises(ValueError, match=f"^The 'span' parameter of {owner}") as caught:
            call(too_large)
        assert str(caught.value).startswith(
            f"The 'span' parameter of {owner} must be at most {largest!r}, so that {reason}. "
            f"Got {too_large!r} instead; use a span of a few units"
        )
        result = call(largest)  # the boundary itself: finite coordinates, no warning
        axis = result.coordinates if isinstance(result, Landscape1D) else result.alphas
        assert axis.tolist() == [-largest, 0.0, largest]


def test_an_extend_whose_grid_overflows_is_refused() -> None:
    data = classification_data()
    model = classifier(0)
    with pytest.raises(ValueError, match="^The 'extend' parameter of interpolate") as caught:
        interpolate(model, model, classifier(1), F.cross_entropy, data, extend=1e308)
    assert str(caught.value).startswith(
        "The 'extend' parameter of interpolate must be at most 8.988465674311579e+307, so that "
        "the grid's width (1 + 2 * extend) is finite in float64. Got 1e+308 instead;"
    )
    float32 = classifier(0).float()
    with pytest.raises(ValueError, match=r"is finite in the model's float32\. Got 1e\+39 instead"):
        interpolate(float32, float32, float32, F.cross_entropy, data, extend=1e39)


def test_a_direction_or_parameter_set_with_nan_or_inf_is_refused_naming_the_tensor() -> None:
    # NaN in a direction made every loss but the center's NaN, with no error.
    data = classification_data()
    model = classifier(0)
    first, second = random_directions(model)
    broken = dict(first)
    broken["4.weight"] = first["4.weight"].clone()
    broken["4.weight"][0, :2] = torch.nan
    with pytest.raises(ValueError, match="^The 'direction' parameter of slice_1d") as caught:
        slice_1d(model, F.cross_entropy, data, broken, resolution=3)
    assert str(caught.value) == (
        "The 'direction' parameter of slice_1d must hold finite values. Got NaN in '4.weight' "
        "(2 of 32 entries) instead; rebuild it (random_directions(model) draws a finite one) "
        "or replace them (torch.nan_to_num)."
    )
    broken["0.weight"] = first["0.weight"].clone()
    broken["0.weight"][1, 1] = -torch.inf
    with pytest.raises(
        ValueError,
        match=r"^The 'directions' parameter of slice_2d must hold finite values\. "
        r"Got inf in '0\.weight' \(1 of 24 entries\)",
    ):  # the first non-finite tensor in the model's parameter order
        slice_2d(model, F.cross_entropy, data, (second, broken), resolution=3)
    end = {name: p.detach().clone() for name, p in classifier(1).named_parameters()}
    end["0.bias"][3] = torch.inf
    with pytest.raises(
        ValueError,
        match=r"^The 'params_b' parameter of interpolate must hold finite values. "
        r"Got inf in '0.bias' \(1 of 8 entries\)",
    ):
        interpolate(model, model, end, F.cross_entropy, data, num_points=3)


def test_interpolate_reads_named_parameters_and_other_iterators_once() -> None:
    # A generator (named_parameters(), the docstring's own example) was refused as "must
    # be a mapping ... Got generator instead".
    data = classification_data()
    model, other = classifier(0), classifier(1)
    trained_buffers(model, data[0])
    trained_buffers(other, data[0])
    expected = interpolate(model, dict(model.named_parameters()), dict(other.named_parameters()),
                           F.cross_entropy, data, num_points=5)  # fmt: skip
    line = interpolate(model, model.named_parameters(), other.named_parameters(),
                       F.cross_entropy, data, num_points=5)  # fmt: skip
    np.testing.assert_array_equal(line.losses, expected.losses)
    ends = [_eval_loss(model, dict(m.named_parameters()), data) for m in (model, other)]
    np.testing.assert_allclose(line.losses[[1, 3]], ends, rtol=1e-12)
    # an iterator over a state_dict carries the buffers along, as the state_dict does
    with_buffers = interpolate(model, iter(model.state_dict().items()),
                               list(other.state_dict().items()), F.cross_entropy, data,
                               num_points=5)  # fmt: skip
    reference = interpolate(model, model, other, F.cross_entropy, data, num_points=5)
    np.testing.assert_array_equal(with_buffers.losses, reference.losses)
    with pytest.raises(TypeError, match="^The 'params_a' parameter of interpolate") as caught:
        interpolate(model, model.parameters(), other, F.cross_entropy, data)
    assert str(caught.value).endswith(
        "Got a generator of Parameter instead; pass model.named_parameters() or "
        "model.state_dict(), not model.parameters()."
    )
