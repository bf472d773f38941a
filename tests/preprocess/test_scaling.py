"""Rescale, MeanSubtract, Standardize and MinMaxScale against scikit-learn and NumPy."""

import numpy as np
import pytest
import torch
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from gradwise.preprocess import (
    ConstantFeatureWarning,
    MeanSubtract,
    MinMaxScale,
    Rescale,
    Standardize,
)


def table(seed, n=50, d=6, offset=0.0):
    rng = np.random.default_rng(seed)
    scales = np.array([1e-3, 0.5, 1.0, 10.0, 300.0, 2.0])[:d]
    return rng.normal(size=(n, d)) * scales + np.arange(d) * 7.0 + offset


def images(seed, n=30, size=(4, 5)):
    rng = np.random.default_rng(seed)
    channels = rng.normal(size=(n, 3, *size)) * np.array([0.2, 3.0, 40.0])[:, None, None]
    return channels + np.array([0.5, -1.0, 100.0])[:, None, None]


@pytest.mark.parametrize(("with_mean", "with_std"), [(True, True), (True, False), (False, True)])
def test_standardize_matches_sklearn_standard_scaler(with_mean, with_std):
    train, test = table(0), table(1, offset=5.0)
    ours = Standardize(with_mean=with_mean, with_std=with_std).fit(train)
    oracle = StandardScaler(with_mean=with_mean, with_std=with_std).fit(train)
    np.testing.assert_allclose(ours.transform(test), oracle.transform(test), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        ours.inverse_transform(test), oracle.inverse_transform(test), rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(ours.mean_.numpy(), train.mean(axis=0), rtol=1e-13)
    if with_std:
        np.testing.assert_allclose(ours.scale_.numpy(), oracle.scale_, rtol=1e-12)
        np.testing.assert_allclose(ours.var_.numpy(), oracle.var_, rtol=1e-12)


@pytest.mark.parametrize("feature_range", [(0, 1), (-1, 1)])
def test_min_max_scale_matches_sklearn_min_max_scaler(feature_range):
    train, test = table(0), table(1, offset=5.0)
    ours = MinMaxScale(feature_range).fit(train)
    oracle = MinMaxScaler(feature_range=feature_range).fit(train)
    np.testing.assert_allclose(ours.transform(test), oracle.transform(test), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        ours.inverse_transform(test), oracle.inverse_transform(test), rtol=1e-12, atol=1e-12
    )
    for name in ("data_min_", "data_max_", "scale_", "min_"):
        np.testing.assert_allclose(getattr(ours, name).numpy(), getattr(oracle, name))
    low, high = feature_range
    out = ours.transform(train)
    np.testing.assert_allclose(out.min(axis=0), low, atol=1e-12)
    np.testing.assert_allclose(out.max(axis=0), high, atol=1e-12)


@pytest.mark.parametrize(
    ("ours", "oracle"),
    [
        (lambda: Standardize(), lambda: StandardScaler()),
        (lambda: MinMaxScale(), lambda: MinMaxScaler()),
        (lambda: MinMaxScale((-1, 1)), lambda: MinMaxScaler((-1, 1))),
    ],
    ids=["Standardize", "MinMaxScale", "MinMaxScale(-1, 1)"],
)
def test_constant_features_get_scale_one_a_warning_and_no_nan(ours, oracle):
    train, test = table(0), table(1)
    train[:, 1] = 4.0
    train[:, 4] = -2.5
    with pytest.warns(ConstantFeatureWarning, match=r"2 features are constant .*indices 1, 4\)"):
        transformer = ours().fit(train)
    expected = oracle().fit(train)
    for data in (train, test):
        out = transformer.transform(data)
        assert np.isfinite(out).all()
        np.testing.assert_allclose(out, expected.transform(data), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(transformer.inverse_transform(transformer.transform(test)), test)
    assert transformer.scale_[1] == transformer.scale_[4]  # the same rule for both


@pytest.mark.parametrize(
    ("ours", "oracle"),
    [
        (lambda: Standardize(), lambda: StandardScaler()),
        (lambda: MinMaxScale(), lambda: MinMaxScaler()),
    ],
    ids=["Standardize", "MinMaxScale"],
)
def test_features_constant_up_to_rounding_count_as_constant_as_in_sklearn(ours, oracle):
    # Proportions summing to 1 up to an ulp: a column of rounding noise, which dividing
    # by its ~1e-16 spread would stretch to a full-scale feature.
    proportions = np.random.default_rng(0).dirichlet(np.ones(3), size=200)
    train = np.column_stack([proportions, proportions.sum(axis=1)])
    assert np.ptp(train[:, 3]) > 0
    with pytest.warns(ConstantFeatureWarning, match=r"1 feature is constant .*index 3\)"):
        transformer = ours().fit(train)
    out = transformer.transform(train)
    np.testing.assert_allclose(out, oracle().fit_transform(train), rtol=1e-12, atol=1e-12)
    assert np.abs(out[:, 3] - out[0, 3]).max() < 1e-12


def test_min_max_treats_rounding_noise_on_large_values_as_constant_too():
    # scikit-learn's 10-ulp test is absolute: at 1000 the same noise is 1e-13 wide, and
    # MinMaxScaler stretches it over [0, 1]; gradwise scales the test with the values.
    proportions = np.random.default_rng(0).dirichlet(np.ones(3), size=200)
    train = np.column_stack([proportions, 1000 * proportions.sum(axis=1)])
    assert np.ptp(train[:, 3]) > 0
    assert np.ptp(MinMaxScaler().fit_transform(train)[:, 3]) == 1.0
    with pytest.warns(ConstantFeatureWarning, match=r"index 3\)"):
        out = MinMaxScale().fit_transform(train)
    assert np.abs(out[:, 3]).max() < 1e-12
    real = np.column_stack([proportions, 1000 + 1e-9 * np.arange(200)])  # 1e-7 wide: real
    expected = (real[:, 3] - real[0, 3]) / (real[-1, 3] - real[0, 3])
    # (x s + m cancels at 1000: scikit-learn's formula, good to ~1e-13 / 1e-7)
    np.testing.assert_allclose(MinMaxScale().fit_transform(real)[:, 3], expected, atol=1e-5)


def test_constant_warning_names_image_positions_and_channels():
    data = images(0)
    data[:, 2, 1, 3] = 7.0
    with pytest.warns(ConstantFeatureWarning, match=r"1 feature is constant .*index \(2, 1, 3\)"):
        Standardize().fit(data)
    data[:, 1] = 3.0
    with pytest.warns(ConstantFeatureWarning, match=r"1 channel is constant .*channel index 1\)"):
        Standardize(per="channel").fit(data)
    with pytest.warns(ConstantFeatureWarning, match="X is constant in the fit data"):
        MinMaxScale(per="global").fit(np.full((4, 2), 3.0))


def test_long_lists_of_constant_features_are_truncated():
    data = np.zeros((5, 15))
    data[:, 0] = np.arange(5)
    with pytest.warns(ConstantFeatureWarning) as record:
        Standardize().fit(data)
    message = str(record[0].message)
    assert "14 features are constant" in message
    assert "(feature indices 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 4 more)" in message


def test_standardize_with_std_false_does_not_warn_about_constant_features():
    data = table(0)
    data[:, 2] = 1.0
    out = Standardize(with_std=False).fit_transform(data)  # warnings are errors here
    np.testing.assert_allclose(out, data - data.mean(axis=0))


def test_standardize_eps_is_added_to_the_variance():
    train = table(0)
    out = Standardize(eps=0.25).fit(train).transform(train)
    expected = (train - train.mean(axis=0)) / np.sqrt(train.var(axis=0) + 0.25)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_per_channel_statistics_on_images():
    train, test = images(0), images(1, size=(6, 2))  # other spatial sizes are fine
    standardize = Standardize(per="channel").fit(train)
    np.testing.assert_allclose(standardize.mean_.numpy(), train.mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(standardize.scale_.numpy(), train.std(axis=(0, 2, 3)))
    out = standardize.transform(train)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0.0, atol=1e-12)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1.0, rtol=1e-12)
    expected = (test - train.mean(axis=(0, 2, 3))[:, None, None]) / train.std(axis=(0, 2, 3))[
        :, None, None
    ]
    np.testing.assert_allclose(standardize.transform(test), expected, rtol=1e-12, atol=1e-12)


def test_per_channel_min_max_on_images():
    train = images(0)
    scaler = MinMaxScale((-1, 1), per="channel").fit(train)
    np.testing.assert_array_equal(scaler.data_min_.numpy(), train.min(axis=(0, 2, 3)))
    np.testing.assert_array_equal(scaler.data_max_.numpy(), train.max(axis=(0, 2, 3)))
    out = scaler.transform(train)
    np.testing.assert_allclose(out.min(axis=(0, 2, 3)), -1.0, atol=1e-12)
    np.testing.assert_allclose(out.max(axis=(0, 2, 3)), 1.0, atol=1e-12)


def test_per_feature_on_images_treats_every_position_as_a_feature():
    train = images(0)
    standardize = Standardize().fit(train)
    assert standardize.mean_.shape == (3, 4, 5)
    np.testing.assert_allclose(
        standardize.transform(train), (train - train.mean(axis=0)) / train.std(axis=0)
    )


def test_per_channel_on_a_table_is_per_feature():
    train = table(0)
    np.testing.assert_array_equal(
        Standardize(per="channel").fit_transform(train), Standardize().fit_transform(train)
    )


def test_global_statistics_are_one_number():
    train, test = images(0), images(1)
    standardize = Standardize(per="global").fit(train)
    assert standardize.mean_.shape == ()
    np.testing.assert_allclose(
        standardize.transform(test), (test - train.mean()) / train.std(), rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize(
    ("per", "oracle"),
    [
        ("feature", lambda train, test: test - train.mean(axis=0)),  # the lectures' formula
        ("global", lambda train, test: test - train.mean()),
        ("channel", lambda train, test: test - train.mean(axis=(0, 2, 3))[:, None, None]),
        ("sample", lambda train, test: test - test.mean(axis=(1, 2, 3), keepdims=True)),
    ],
)
def test_mean_subtract(per, oracle):
    train, test = images(0), images(1)
    out = MeanSubtract(per=per).fit(train).transform(test)
    np.testing.assert_allclose(out, oracle(train, test), rtol=1e-12, atol=1e-12)


def test_per_sample_mean_subtract_learns_nothing_and_has_no_inverse():
    centering = MeanSubtract(per="sample").fit(images(0))
    assert centering.state_dict()["tensors"].keys() == {"sample_shape_"}
    with pytest.raises(ValueError, match=r"MeanSubtract\(per='sample'\) has no inverse_transform"):
        centering.inverse_transform(images(1))


def test_rescale_divides_8_bit_pixels_by_255():
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    out = Rescale(1 / 255).fit(pixels).transform(pixels)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, np.arange(256).reshape(16, 16) / 255, rtol=1e-7)
    np.testing.assert_allclose(Rescale(1 / 255).fit(pixels).inverse_transform(out), pixels)


def test_rescale_accepts_any_sample_shape_after_fit():
    rescale = Rescale(2.0).fit(np.ones((2, 3)))
    out = rescale.transform(torch.ones(4, 5, 6))
    assert torch.equal(out, torch.full((4, 5, 6), 2.0))


def test_min_max_values_outside_the_training_range_are_not_clipped():
    scaler = MinMaxScale().fit(np.array([[0.0], [10.0]]))
    np.testing.assert_allclose(scaler.transform(np.array([[-5.0], [20.0]])), [[-0.5], [2.0]])


def test_a_transform_that_changes_nothing_still_returns_a_copy() -> None:
    # scikit-learn's StandardScaler(with_mean=False, with_std=False) returns a copy:
    # writing to the output must not change the input.
    identity = Standardize(with_mean=False, with_std=False)
    array = np.random.default_rng(0).normal(size=(5, 3))
    out = identity.fit(array).transform(array)
    out[0, 0] = 123.0
    assert array[0, 0] != 123.0
    tensor = torch.randn(5, 3, dtype=torch.float64)
    result = identity.fit(tensor).transform(tensor)
    assert result.untyped_storage().data_ptr() != tensor.untyped_storage().data_ptr()
    assert torch.equal(result, tensor)
