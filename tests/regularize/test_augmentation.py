"""Augmentations against explicit torch constructions, and their seeding and modes."""

import copy
import fractions
import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradwise.regularize import (
    GaussianNoise,
    Mixup,
    RandomCrop,
    RandomHorizontalFlip,
    RandomRotation,
    RandomShift,
)

IMAGES = (64, 2, 5, 6)
SIGNALS = (64, 2, 9)


def distinct(shape, dtype=torch.float32):
    """Positive values, all different: a shifted copy reveals its shift."""
    return torch.arange(1, math.prod(shape) + 1, dtype=dtype).reshape(shape)


def shifted(x, shifts):
    """x moved by whole pixels with a zero border: torch.roll, then the wrapped part zeroed."""
    out = x
    for axis, k in enumerate(shifts):
        dim = out.ndim - len(shifts) + axis
        out = torch.roll(out, k, dims=dim)
        border = torch.arange(out.shape[dim])
        wrapped = border < k if k >= 0 else border >= out.shape[dim] + k
        view = [1] * out.ndim
        view[dim] = -1
        out = out.masked_fill(wrapped.view(view), 0)
    return out


def match_shift(output, sample, max_shift):
    """The unique shift (one per spatial axis) that turns ``sample`` into ``output``."""
    axes = sample.ndim - 1
    ranges = [range(-max_shift, max_shift + 1)] * axes
    grid = torch.cartesian_prod(*[torch.tensor(r) for r in ranges]).reshape(-1, axes)
    found = [tuple(k.tolist()) for k in grid if torch.equal(output, shifted(sample, k.tolist()))]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize("shape", [IMAGES, SIGNALS])
def test_flip_reverses_exactly_the_selected_samples(shape):
    x = distinct(shape)
    out = RandomHorizontalFlip(p=0.5, seed=0)(x)
    flipped = torch.tensor(
        [torch.equal(o, torch.flip(s, dims=[-1])) for o, s in zip(out, x, strict=True)]
    )
    kept = torch.tensor([torch.equal(o, s) for o, s in zip(out, x, strict=True)])
    assert torch.all(flipped ^ kept)  # each sample is one or the other
    assert 10 < int(flipped.sum()) < 54


def test_flip_probability():
    x = torch.zeros(4000, 1, 2)
    x[:, :, 0] = 1.0
    out = RandomHorizontalFlip(p=0.3, seed=1)(x)
    fraction = float((out[:, 0, 1] == 1.0).float().mean())
    assert abs(fraction - 0.3) < 4 * math.sqrt(0.3 * 0.7 / 4000)
    assert torch.equal(RandomHorizontalFlip(p=0.0, seed=1)(x), x)
    assert torch.equal(RandomHorizontalFlip(p=1.0, seed=1)(x), x.flip(-1))


@pytest.mark.parametrize("shape", [IMAGES, SIGNALS])
def test_shift_is_a_zero_filled_translation_by_each_allowed_amount(shape):
    x = distinct(shape)
    out = RandomShift(max_shift=1, seed=2)(x)
    shifts = {match_shift(o, s, 1) for o, s in zip(out, x, strict=True)}
    # every shift in {-1, 0, 1} per axis occurs in 64 samples
    assert len(shifts) == 3 ** (len(shape) - 2)


def test_fractional_shift_is_whole_pixels_up_to_the_fraction():
    x = distinct((400, 1, 10))
    out = RandomShift(max_shift=0.25, seed=3)(x)  # floor(0.25 * 10) = 2 pixels
    assert {match_shift(o, s, 3) for o, s in zip(out, x, strict=True)} == {
        (k,) for k in range(-2, 3)
    }


@pytest.mark.parametrize(("fraction", "length"), [(0.29, 100), (0.57, 100), (0.7, 10)])
def test_fractional_shift_reaches_the_fraction_of_the_length_as_typed(fraction, length):
    # 0.29 * 100 is 28.999999999999996 in floating point: the largest shift was 28, not 29.
    expected = math.floor(fractions.Fraction(str(fraction)) * length)
    i = torch.arange(length, dtype=torch.float32)
    x = (i + 1).expand(2000, 1, length)  # x[i] = i + 1 in every sample
    out = RandomShift(max_shift=fraction, seed=3)(x)[:, 0]  # (batch, length)
    # out[i] = x[i - k] = i - k + 1 where it comes from the input: k = i + 1 - out[i]
    shifts = torch.where(out > 0, i + 1 - out, torch.nan).nanmean(dim=1)
    assert set(shifts.long().tolist()) == set(range(-expected, expected + 1))


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate"])
@pytest.mark.parametrize("shape", [IMAGES, SIGNALS])
def test_crop_takes_a_window_of_the_padded_input(shape, padding_mode):
    x, padding = distinct(shape), 2
    spatial = len(shape) - 2
    mode = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate"}[padding_mode]
    padded = F.pad(x, [padding] * 2 * spatial, mode=mode)
    out = RandomCrop(padding, padding_mode=padding_mode, seed=4)(x)
    corners = torch.cartesian_prod(*[torch.arange(2 * padding + 1)] * spatial).reshape(-1, spatial)
    offsets = set()
    for o, p in zip(out, padded, strict=True):
        found = [c.tolist() for c in corners if torch.equal(o, window(p, c.tolist(), shape[2:]))]
        assert len(found) == 1
        offsets.add(tuple(found[0]))
    assert len(offsets) >= (5 if spatial == 1 else 16)  # of 5 or 25, in 64 samples


def window(padded, corner, size):
    return padded[(slice(None), *(slice(c, c + n) for c, n in zip(corner, size, strict=True)))]


def test_crop_with_zero_padding_is_a_shift_with_a_zero_border():
    x = distinct(SIGNALS)
    out = RandomCrop(3, seed=5)(x)
    assert {match_shift(o, s, 3) for o, s in zip(out, x, strict=True)} == {
        (k,) for k in range(-3, 4)
    }


def translated_by_hand(sample, shift, fill):
    """sample (C, H, W) or (C, L) moved by ``shift``, position by position; what comes from
    outside is ``fill`` at that position (a scalar, or a tensor broadcast to the sample)."""
    fill = torch.as_tensor(fill, dtype=sample.dtype).expand(sample.shape)
    out = torch.empty_like(sample)
    for index in torch.cartesian_prod(*[torch.arange(n) for n in sample.shape]).reshape(
        -1, sample.ndim
    ):
        c, *position = index.tolist()
        source = [i - k for i, k in zip(position, shift, strict=True)]
        inside = all(0 <= i < n for i, n in zip(source, sample.shape[1:], strict=True))
        out[(c, *position)] = sample[(c, *source)] if inside else fill[(c, *position)]
    return out


@pytest.mark.parametrize(
    ("shape", "fill"),
    [
        (IMAGES, -1.5),
        (IMAGES, torch.tensor([[[-3.0]], [[2.0]]])),  # per channel
        (IMAGES, -torch.arange(60.0).reshape(2, 5, 6)),  # per position
        (SIGNALS, -torch.arange(18.0).reshape(2, 9)),
    ],
)
def test_shift_fills_what_comes_from_outside_with_fill(shape, fill):
    x = distinct(shape)
    out = RandomShift(max_shift=1, fill=fill, seed=2)(x)
    zero_filled = RandomShift(max_shift=1, seed=2)(x)  # the same draws: reveals the shifts
    for o, z, sample in zip(out, zero_filled, x, strict=True):
        shift = match_shift(z, sample, 1)
        assert torch.equal(o, translated_by_hand(sample, shift, fill))


@pytest.mark.parametrize("padding_mode", ["constant", "zeros"])
def test_crop_pads_with_fill(padding_mode):
    x, padding = distinct(IMAGES), 2
    fill = -7.0 if padding_mode == "constant" else 0.0
    padded = F.pad(x, [padding] * 4, mode="constant", value=fill)
    out = RandomCrop(padding, padding_mode=padding_mode, fill=fill, seed=4)(x)
    corners = torch.cartesian_prod(*[torch.arange(2 * padding + 1)] * 2)
    for o, p in zip(out, padded, strict=True):
        assert sum(torch.equal(o, window(p, c.tolist(), IMAGES[2:])) for c in corners) == 1


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_rotation_fills_what_comes_from_outside_with_fill(interpolation):
    # Padding with a constant c and rotating is rotating x - c with zeros and adding c back.
    x = torch.rand(16, 2, 9, 9, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    fill = torch.tensor([[[-2.0]], [[3.0]]], dtype=torch.float64)
    out = RandomRotation(45.0, interpolation, fill=fill, seed=1)(x)
    expected = RandomRotation(45.0, interpolation, seed=1)(x - fill) + fill
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    assert (out == 3.0).any()  # corners came from outside


@pytest.mark.parametrize(
    "make",
    [
        lambda fill: RandomShift(2, fill=fill, seed=3),
        lambda fill: RandomCrop(2, fill=fill, seed=3),
    ],
    ids=["RandomShift", "RandomCrop"],
)
@pytest.mark.parametrize("fill", [128.0, torch.tensor([[[0.0]], [[255.0]]])])
def test_an_integer_batch_keeps_its_dtype_with_a_fill(make, fill):
    # uint8 images (torchvision.io's) with a grey fill came back as float32.
    x = torch.randint(256, IMAGES, generator=torch.Generator().manual_seed(7)).to(torch.uint8)
    out = make(fill)(x)
    assert out.dtype == torch.uint8
    as_float = make(fill)(x.float())  # the same draws: the float path is the oracle
    assert torch.equal(out, as_float.to(torch.uint8))


@pytest.mark.parametrize("fill", [0.5, 256.0, -1.0, torch.tensor([[[0.0]], [[0.5]]])])
def test_a_fill_an_integer_batch_cannot_hold_is_refused(fill):
    x = torch.zeros(IMAGES, dtype=torch.uint8)
    with pytest.raises(
        ValueError,
        match=r"^The 'fill' parameter of RandomShift must be a whole number in \[0, 255\] "
        r"for a batch of dtype torch\.uint8\. Got .* instead\.$",
    ):
        RandomShift(1, fill=fill, seed=0)(x)


def test_a_fill_that_does_not_fit_the_sample_or_the_padding_is_refused():
    with pytest.raises(
        ValueError,
        match=r"^The 'fill' parameter of RandomShift must broadcast to one sample of the "
        r"batch, \(2, 5, 6\)\. Got a tensor of shape \(3, 1, 1\) instead\.$",
    ):
        RandomShift(1, fill=torch.zeros(3, 1, 1))(distinct(IMAGES))
    with pytest.raises(
        ValueError,
        match=r"^The 'fill' parameter of RandomCrop is the border of "
        r"padding_mode='constant'; padding_mode='reflect' has no use for it\.",
    ):
        RandomCrop(2, padding_mode="reflect", fill=1.0)
    with pytest.raises(
        ValueError,
        match=r"^The 'fill' parameter of RandomRotation must be a "
        r"finite float, or a float tensor of finite values",
    ):
        RandomRotation(10.0, fill=torch.tensor(float("nan")))


def test_reflect_needs_padding_smaller_than_the_input():
    with pytest.raises(
        ValueError,
        match=r"^The 'padding' parameter of RandomCrop must be smaller than every spatial "
        r"length with padding_mode='reflect'\. Got 5 instead, for a tensor of shape \(2, "
        r"1, 5, 8\)\.$",
    ):
        RandomCrop(5, padding_mode="reflect")(torch.zeros(2, 1, 5, 8))


@pytest.mark.parametrize(("angle", "turns"), [(90.0, 1), (-90.0, -1), (180.0, 2)])
def test_rotation_by_right_angles_is_rot90(angle, turns):
    x = torch.rand(3, 2, 7, 7, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    out = RandomRotation(degrees=(angle, angle), seed=0)(x)
    expected = torch.rot90(x, turns, dims=(-2, -1))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-9)


def test_small_rotations_keep_the_centre_and_the_mass_of_a_centred_blob():
    coordinates = torch.arange(29, dtype=torch.float64) - 14
    blob = torch.exp(-(coordinates[:, None] ** 2 + coordinates[None, :] ** 2) / (2 * 3.0**2))
    x = blob.expand(16, 1, 29, 29)
    out = RandomRotation(degrees=10.0, seed=7)(x)
    torch.testing.assert_close(out[:, 0, 14, 14], x[:, 0, 14, 14], rtol=0, atol=1e-12)
    torch.testing.assert_close(out.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)), rtol=1e-2, atol=0)
    # the angles differ per image: an anisotropic image comes out differently in each
    stripe = torch.zeros(16, 1, 29, 29, dtype=torch.float64)
    stripe[:, :, 14, :] = 1.0
    rotated = RandomRotation(degrees=10.0, seed=7)(stripe)
    assert len({tuple(r.flatten().tolist()) for r in rotated}) == 16


def test_rotation_is_for_images_only():
    with pytest.raises(
        ValueError,
        match=r"^The 'x' parameter of RandomRotation must be a batch of images \(N, C, H, "
        r"W\)\. Got a tensor of shape \(4, 1, 100\) instead\.$",
    ):
        RandomRotation(10.0)(torch.zeros(4, 1, 100))
    with pytest.raises(
        TypeError, match="must be a floating-point tensor. Got a tensor of dtype torch.uint8"
    ):
        RandomRotation(10.0)(torch.zeros(4, 1, 8, 8, dtype=torch.uint8))


def test_noise_has_the_requested_standard_deviation():
    x = torch.full((64, 3, 32, 32), 5.0, dtype=torch.float64)
    noise = GaussianNoise(std=0.2, seed=8)(x) - x
    assert abs(float(noise.mean())) < 4 * 0.2 / math.sqrt(noise.numel())
    torch.testing.assert_close(float(noise.std()), 0.2, rtol=2e-2, atol=0)
    assert not torch.equal(noise[0], noise[1])
    assert torch.equal(GaussianNoise(std=0.0, seed=8)(x), x)


def make_all(seed):
    return [
        RandomHorizontalFlip(seed=seed),
        RandomShift(2, seed=seed),
        RandomCrop(2, padding_mode="reflect", seed=seed),
        RandomRotation(20.0, seed=seed),
        GaussianNoise(0.1, seed=seed),
    ]


def outputs(augmentations, calls=3):
    x = torch.rand(8, 1, 9, 9, generator=torch.Generator().manual_seed(9))
    return [[augment(x) for _ in range(calls)] for augment in augmentations]


def test_the_same_seed_gives_the_same_sequence_of_outputs():
    first, second, other = outputs(make_all(11)), outputs(make_all(11)), outputs(make_all(12))
    for one, two, three in zip(first, second, other, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(one, two, strict=True))
        assert not torch.equal(one[0], one[1])  # fresh randomness on every call
        assert not torch.equal(one[0], three[0])


def test_calls_leave_the_global_generator_alone():
    augmentations = make_all(None)
    mixup = Mixup(0.4, num_classes=3)
    x, y = torch.ones(4, 2), torch.tensor([0, 1, 2, 0])
    state = torch.get_rng_state()
    outputs(augmentations)
    mixup(x, y)
    assert torch.equal(torch.get_rng_state(), state)


def test_without_a_seed_torch_manual_seed_makes_runs_reproducible():
    torch.manual_seed(13)
    first = outputs(make_all(None))
    torch.manual_seed(13)
    second = outputs(make_all(None))
    for one, two in zip(first, second, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(one, two, strict=True))


def test_eval_mode_is_the_identity_and_train_mode_turns_it_back_on():
    x = torch.rand(8, 1, 9, 9)
    pipeline = nn.Sequential(*make_all(0))
    pipeline.eval()
    assert pipeline(x) is x
    pipeline.train()
    assert not torch.equal(pipeline(x), x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("augment", make_all(0), ids=lambda a: type(a).__name__)
def test_shape_and_dtype_are_kept(augment, dtype):
    x = torch.rand(4, 3, 8, 10, dtype=dtype)
    out = augment(x)
    assert out.shape == x.shape
    assert out.dtype == dtype
    if not isinstance(augment, RandomRotation):
        signal = torch.rand(4, 3, 10, dtype=dtype)
        assert augment(signal).shape == signal.shape


@pytest.mark.parametrize("augment", make_all(0)[:3], ids=lambda a: type(a).__name__)
def test_bad_shapes_are_refused_clearly(augment):
    name = type(augment).__name__
    with pytest.raises(
        ValueError,
        match=rf"^The 'x' parameter of {name} must be a batch of signals \(N, C, L\) or a "
        rf"batch of images \(N, C, H, W\)\. Got a tensor of shape \(4, 10\) instead\.$",
    ):
        augment(torch.zeros(4, 10))
    with pytest.raises(
        TypeError, match=rf"^The 'x' parameter of {name} must be a tensor\. Got list instead\.$"
    ):
        augment([1.0])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: RandomHorizontalFlip(p=1.5),
            "The 'p' parameter of RandomHorizontalFlip must be a float in [0, 1]. Got 1.5 instead.",
        ),
        (
            lambda: RandomShift(1.5),
            "The 'max_shift' parameter of RandomShift must be an int >= 0 (pixels) or a float "
            "in [0, 1) (a fraction of the length). Got 1.5 instead.",
        ),
        (
            lambda: RandomCrop(4, padding_mode="wrap"),
            "The 'padding_mode' parameter of RandomCrop must be one of 'constant', 'zeros', "
            "'reflect', 'replicate'. Got 'wrap' instead.",
        ),
        (
            lambda: RandomRotation((10.0, -10.0)),
            "The 'degrees' parameter of RandomRotation must be a float in [0, 180] or a pair "
            "(low, high) with -180 <= low <= high <= 180. Got (10.0, -10.0) instead.",
        ),
        (
            lambda: GaussianNoise(-1.0),
            "The 'std' parameter of GaussianNoise must be a finite float >= 0. Got -1.0 instead.",
        ),
        (
            lambda: GaussianNoise(1.0, seed=-3),
            "The 'seed' parameter of GaussianNoise must be an int >= 0 or None. Got -3 instead.",
        ),
    ],
)
def test_bad_arguments_raise_in_the_one_format(make, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        make()


def test_a_deep_copy_continues_the_same_stream():
    x = torch.rand(8, 1, 9, 9, generator=torch.Generator().manual_seed(14))
    for augment in make_all(15):
        augment(x)
        twin = copy.deepcopy(augment)
        assert torch.equal(augment(x), twin(x))


def test_setting_a_state_replaces_the_generators_so_get_then_set_round_trips():
    # Before, setting the state taken before the first call ({}) removed nothing: the
    # generator a later set had loaded stayed (a refused resume kept the checkpoint's draws).
    x = torch.rand(8, 1, 9, 9, generator=torch.Generator().manual_seed(16))
    fresh = [augment(x) for augment in make_all(17)]
    for augment, loaded, first in zip(make_all(17), make_all(18), fresh, strict=True):
        before = augment.get_rng_state()
        loaded(x)
        augment.set_rng_state(loaded.get_rng_state())
        augment.set_rng_state(before)
        assert augment.get_rng_state() == before == {}
        assert torch.equal(augment(x), first)  # seeded afresh on first use, as if never set
