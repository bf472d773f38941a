"""Bad arguments and bad data get the project's messages, at the boundary."""

import re

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA as SklearnPCA

from gradwise.preprocess import (
    PCA,
    MeanSubtract,
    MinMaxScale,
    PCAWhiten,
    Rescale,
    Standardize,
    ZCAWhiten,
)


def raises_exactly(message):
    return pytest.raises(ValueError, match="^" + re.escape(message) + "$")


# (make, parameter, owner, expected, got): the message must read, in full,
# "The '<parameter>' parameter of <owner> must be <expected>. Got <got> instead."
CASES = [
    (lambda: Rescale(0), "factor", "Rescale", "a finite non-zero float", "0"),
    (lambda: Rescale(float("inf")), "factor", "Rescale", "a finite non-zero float", "inf"),
    (lambda: Rescale("1/255"), "factor", "Rescale", "a finite non-zero float", "'1/255'"),
    (
        lambda: MeanSubtract(per="pixel"),
        "per",
        "MeanSubtract",
        "one of 'feature', 'sample', 'channel', 'global'",
        "'pixel'",
    ),
    (
        lambda: Standardize(per="sample"),
        "per",
        "Standardize",
        "one of 'feature', 'channel', 'global'",
        "'sample'",
    ),
    (lambda: Standardize(with_std=1), "with_std", "Standardize", "a bool", "1"),
    (lambda: Standardize(eps=-1e-5), "eps", "Standardize", "a finite float >= 0", "-1e-05"),
    (
        lambda: MinMaxScale((1, -1)),
        "feature_range",
        "MinMaxScale",
        "a pair of finite floats (low, high) with low < high",
        "(1, -1)",
    ),
    (
        lambda: MinMaxScale((0, 1, 2)),
        "feature_range",
        "MinMaxScale",
        "a pair of finite floats (low, high) with low < high",
        "(0, 1, 2)",
    ),
    (
        lambda: PCA(0),
        "n_components",
        "PCA",
        "an int >= 1 or a float in (0, 1) or None",
        "0",
    ),
    (
        lambda: PCA(1.0),
        "n_components",
        "PCA",
        "an int >= 1 or a float in (0, 1) or None",
        "1.0",
    ),
    (
        lambda: PCAWhiten(True),
        "n_components",
        "PCAWhiten",
        "an int >= 1 or a float in (0, 1) or None",
        "True",
    ),
    (lambda: PCAWhiten(eps=float("nan")), "eps", "PCAWhiten", "a finite float >= 0", "nan"),
    (lambda: ZCAWhiten(eps=-1.0), "eps", "ZCAWhiten", "a finite float >= 0", "-1.0"),
    # An infinite eps would turn every output into zeros: refused.
    (lambda: ZCAWhiten(eps=float("inf")), "eps", "ZCAWhiten", "a finite float >= 0", "inf"),
    (lambda: PCAWhiten(eps=float("inf")), "eps", "PCAWhiten", "a finite float >= 0", "inf"),
    (
        lambda: Standardize(eps=torch.tensor(float("inf"))),
        "eps",
        "Standardize",
        "a finite float >= 0",
        "tensor(inf)",
    ),
]


@pytest.mark.parametrize(("make", "parameter", "owner", "expected", "got"), CASES)
def test_bad_constructor_arguments(make, parameter, owner, expected, got):
    message = f"The '{parameter}' parameter of {owner} must be {expected}. Got {got} instead."
    with raises_exactly(message):
        make()


def test_constructor_arguments_are_stored_unchanged():
    feature_range = (-1, 1)
    scaler = MinMaxScale(feature_range, per="channel")
    assert scaler.feature_range is feature_range
    assert scaler.get_params() == {"feature_range": (-1, 1), "per": "channel"}
    assert PCA(np.int64(3)).n_components == 3


def test_too_many_components_for_the_data():
    message = (
        "The 'n_components' parameter of PCA must be an int <= 8 (the number of features) "
        "or a float in (0, 1). Got 9 instead."
    )
    with raises_exactly(message):
        PCA(9).fit(np.random.default_rng(0).normal(size=(20, 8)))


def test_a_different_number_of_features_at_transform():
    scaler = Standardize().fit(np.random.default_rng(0).normal(size=(10, 64)))
    message = "X has 30 features, but this Standardize was fitted with 64 features."
    with raises_exactly(message):
        scaler.transform(np.zeros((5, 30)))
    with raises_exactly(message):
        scaler.inverse_transform(np.zeros((5, 30)))


def test_a_different_sample_shape_with_the_same_number_of_features():
    zca = ZCAWhiten().fit(torch.randn(50, 3, 2, 2))
    message = (
        "X has samples of shape (3, 4), but this ZCAWhiten was fitted on samples of shape "
        "(3, 2, 2)."
    )
    with raises_exactly(message):
        zca.transform(torch.randn(5, 3, 4))


def test_a_different_number_of_channels():
    scaler = MinMaxScale(per="channel").fit(torch.rand(8, 3, 4, 4))
    with raises_exactly("X has 1 channel, but this MinMaxScale was fitted with 3 channels."):
        scaler.transform(torch.rand(2, 1, 4, 4))


def test_inverse_transform_of_pca_needs_one_column_per_component():
    pca = PCA(3).fit(np.random.default_rng(0).normal(size=(20, 8)))
    message = (
        "X has shape (4, 8), but this PCA outputs 3 components: inverse_transform expects "
        "shape (N, 3)."
    )
    with raises_exactly(message):
        pca.inverse_transform(np.zeros((4, 8)))


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        ([[1.0, 2.0], [3.0, 4.0]], TypeError, "expects X as a numpy.ndarray or a torch.Tensor"),
        (np.array(["a", "b"]).reshape(2, 1), TypeError, "Got an array of dtype <U1 instead"),
        (torch.ones(3, 2, dtype=torch.complex64), TypeError, "expects real data"),
        (np.arange(5.0), ValueError, r"Got an array of shape \(5,\) instead. Reshape it"),
        (np.zeros((5, 0)), ValueError, "expects at least one feature"),
    ],
)
def test_data_of_the_wrong_kind_or_shape(data, error, message):
    with pytest.raises(error, match=message):
        Standardize().fit(data)


def test_read_only_and_strided_arrays_are_accepted_unchanged():
    data = np.random.default_rng(0).normal(size=(20, 6))
    frozen = data.copy()
    frozen.flags.writeable = False
    reversed_columns = data[::-1, ::-2]
    out = Standardize().fit_transform(frozen)
    np.testing.assert_array_equal(out, Standardize().fit_transform(data))
    np.testing.assert_array_equal(
        Standardize().fit_transform(reversed_columns),
        Standardize().fit_transform(reversed_columns.copy()),
    )
    np.testing.assert_array_equal(frozen, data)


def test_transform_never_modifies_its_input():
    data = torch.randn(30, 5, dtype=torch.float64)
    before = data.clone()
    for transformer in (Standardize(), ZCAWhiten(), Rescale(3.0)):
        transformed = transformer.fit_transform(data)
        transformer.inverse_transform(transformed)
        assert transformed is not data
    MeanSubtract(per="sample").fit(data).transform(data)
    assert torch.equal(data, before)


@pytest.mark.parametrize("make", [PCA, PCAWhiten])
def test_more_components_than_samples_are_refused_like_scikit_learn(make):
    # 5 samples of 10 features: scikit-learn refuses n_components > min(N, D) = 5.
    train = np.random.default_rng(0).normal(size=(5, 10))
    with pytest.raises(ValueError, match="n_components"):
        SklearnPCA(6).fit(train)
    owner = make.__name__
    message = (
        f"The 'n_components' parameter of {owner} must be an int <= 5 (the number of "
        "samples) or a float in (0, 1). Got 6 instead. Once centered, 5 samples of 10 "
        "features vary along at most 4 directions; the other components are an arbitrary "
        "basis of directions of zero variance. Pass n_components <= 4 to keep only "
        "directions that vary (or a float in (0, 1) for a fraction of the variance), or "
        "fit on more samples."
    )
    with raises_exactly(message):
        make(6).fit(train)
    with raises_exactly(message):
        make(6).fit_transform(torch.from_numpy(train))
    assert make(5).fit(train).n_components_ == SklearnPCA(5).fit(train).n_components_ == 5
