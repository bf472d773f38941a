"""The checks every transformer gets (STYLE.md §8): the scikit-learn contract, kinds and
dtypes, fit-only statistics, save/load bit for bit, inverses, bad fit data."""

import numpy as np
import pytest
import torch

from gradwise.preprocess import (
    PCA,
    MeanSubtract,
    MinMaxScale,
    NotFittedError,
    PCAWhiten,
    Rescale,
    Standardize,
    ZCAWhiten,
    from_state_dict,
    load,
    save,
)

# name -> (factory, inverse_transform undoes transform exactly)
TRANSFORMERS = {
    "Rescale": (lambda: Rescale(0.5), True),
    "MeanSubtract-feature": (lambda: MeanSubtract(), True),
    "MeanSubtract-sample": (lambda: MeanSubtract(per="sample"), False),
    "MeanSubtract-channel": (lambda: MeanSubtract(per="channel"), True),
    "MeanSubtract-global": (lambda: MeanSubtract(per="global"), True),
    "Standardize-feature": (lambda: Standardize(), True),
    "Standardize-channel": (lambda: Standardize(per="channel", eps=1e-3), True),
    "Standardize-global": (lambda: Standardize(per="global", with_mean=False), True),
    "MinMaxScale-feature": (lambda: MinMaxScale(), True),
    "MinMaxScale-channel": (lambda: MinMaxScale((-1, 1), per="channel"), True),
    "MinMaxScale-global": (lambda: MinMaxScale(per="global"), True),
    "PCA-all": (lambda: PCA(), True),
    "PCA-5": (lambda: PCA(5), False),
    "PCA-0.9": (lambda: PCA(0.9), False),
    "PCAWhiten": (lambda: PCAWhiten(), True),
    "PCAWhiten-4": (lambda: PCAWhiten(4, eps=0.0), False),
    "ZCAWhiten": (lambda: ZCAWhiten(eps=1e-3), True),
}
NAMES = list(TRANSFORMERS)
STATELESS = {"Rescale", "MeanSubtract-sample"}


def images(seed, n=40, offset=0.0):
    """(n, 3, 2, 3) float64 data with correlated features and per-channel offsets."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(18, 18))
    flat = rng.normal(size=(n, 18)) @ mixing + offset
    return (flat.reshape(n, 3, 2, 3) + np.array([1.0, -2.0, 5.0])[:, None, None]).copy()


def make(name):
    return TRANSFORMERS[name][0]()


def state_tensors(transformer):
    return {k: v.clone() for k, v in transformer.state_dict()["tensors"].items()}


@pytest.mark.parametrize("name", NAMES)
def test_fit_returns_self_and_constructor_arguments_are_kept(name):
    transformer = make(name)
    params = transformer.get_params()
    assert transformer.fit(images(0)) is transformer
    assert transformer.get_params() == params
    assert type(transformer)(**params).get_params() == params
    assert transformer.n_features_in_ == 18
    assert transformer.sample_shape_ == (3, 2, 3)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "convert",
    [
        lambda x: x.astype(np.float32),
        lambda x: x,
        lambda x: torch.tensor(x, dtype=torch.float32),
        lambda x: torch.tensor(x, dtype=torch.float64),
    ],
    ids=["numpy-float32", "numpy-float64", "tensor-float32", "tensor-float64"],
)
def test_output_has_input_kind_and_dtype_and_is_rounded_once(name, convert):
    train, test = convert(images(0)), convert(images(1))
    transformer = make(name).fit(train)
    out = transformer.transform(test)
    assert type(out) is type(test)
    assert out.dtype == test.dtype
    # All arithmetic is float64 on the given values; the result is rounded once.
    as64 = test.astype(np.float64) if isinstance(test, np.ndarray) else test.to(torch.float64)
    expected = transformer.transform(as64)
    if isinstance(out, np.ndarray):
        np.testing.assert_array_equal(out, expected.astype(out.dtype))
    else:
        assert torch.equal(out, expected.to(out.dtype))


@pytest.mark.parametrize("name", NAMES)
def test_integer_input_gives_float32(name):
    pixels = np.random.default_rng(0).integers(0, 256, size=(30, 3, 2, 3), dtype=np.uint8)
    transformer = make(name).fit(pixels)
    out_numpy = transformer.transform(pixels)
    out_tensor = transformer.transform(torch.from_numpy(pixels))
    assert out_numpy.dtype == np.float32
    assert out_tensor.dtype == torch.float32
    np.testing.assert_array_equal(
        out_numpy, transformer.transform(pixels.astype(np.float64)).astype(np.float32)
    )
    np.testing.assert_array_equal(out_tensor.numpy(), out_numpy)


@pytest.mark.parametrize("name", NAMES)
def test_numpy_and_tensor_inputs_give_the_same_numbers(name):
    train, test = images(0), images(1)
    from_numpy = make(name).fit(train)
    from_tensor = make(name).fit(torch.from_numpy(train))
    np.testing.assert_array_equal(
        from_numpy.transform(test), from_tensor.transform(torch.from_numpy(test)).numpy()
    )


@pytest.mark.parametrize("name", NAMES)
def test_use_before_fit_is_refused(name):
    transformer = make(name)
    owner = type(transformer).__name__
    message = (
        f"This {owner} instance is not fitted yet. Call 'fit' with the training data before "
        "using this transformer."
    )
    for method in (transformer.transform, transformer.inverse_transform):
        with pytest.raises(NotFittedError) as error:
            method(images(0))
        assert str(error.value) == message
    assert not hasattr(transformer, "n_features_in_")


@pytest.mark.parametrize("name", sorted(set(NAMES) - STATELESS))
def test_transform_uses_the_fit_statistics_and_never_refits(name):
    train, test = images(0), images(1, offset=3.0)
    transformer = make(name).fit(train)
    before = state_tensors(transformer)
    out = transformer.transform(test)
    after = transformer.state_dict()["tensors"]
    assert before.keys() == after.keys()
    assert all(torch.equal(before[key], after[key]) for key in before)
    # Statistics of the test data itself would give other numbers.
    assert not np.allclose(out, make(name).fit(test).transform(test))
    # ... and the same ones as a transformer fitted on the training data only.
    np.testing.assert_array_equal(out, make(name).fit(train).transform(test))


@pytest.mark.parametrize("name", NAMES)
def test_refit_replaces_the_statistics(name):
    transformer = make(name).fit(images(0))
    transformer.fit(images(2, offset=1.0))
    fresh = make(name).fit(images(2, offset=1.0))
    np.testing.assert_array_equal(transformer.transform(images(1)), fresh.transform(images(1)))


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_and_file_round_trips_are_bit_for_bit(name, tmp_path):
    transformer = make(name).fit(images(0).astype(np.float32))
    test = torch.tensor(images(1), dtype=torch.float32)
    expected = transformer.transform(test)
    rebuilt = from_state_dict(transformer.state_dict())
    save(transformer, tmp_path / "step.npz")
    loaded = load(tmp_path / "step.npz")
    for copy in (rebuilt, loaded):
        assert type(copy) is type(transformer)
        assert copy.get_params() == transformer.get_params()
        assert torch.equal(copy.transform(test), expected)
    # The loaded one answers an array with an array, whatever it was fitted on.
    np.testing.assert_array_equal(loaded.transform(test.numpy()), expected.numpy())


@pytest.mark.parametrize("name", [name for name in NAMES if TRANSFORMERS[name][1]])
def test_inverse_transform_undoes_transform(name):
    transformer = make(name).fit(images(0))
    test = images(1, offset=2.0)
    np.testing.assert_allclose(
        transformer.inverse_transform(transformer.transform(test)), test, rtol=0, atol=1e-9
    )


@pytest.mark.parametrize("name", NAMES)
def test_fit_refuses_non_finite_data_naming_count_and_first_row(name):
    data = images(0)
    data[7, 1, 0, 2] = np.nan
    data[12, 0, 1, 1] = np.inf
    data[12, 2, 0, 0] = -np.inf
    owner = type(make(name)).__name__
    with pytest.raises(ValueError, match="X contains 3 NaN or inf values, the first in row 7"):
        make(name).fit(data)
    with pytest.raises(ValueError, match=f"^{owner}.fit cannot learn from non-finite data"):
        make(name).fit_transform(torch.from_numpy(data))


@pytest.mark.parametrize("name", NAMES)
def test_fit_needs_two_samples(name):
    with pytest.raises(ValueError, match="needs at least 2 samples to learn from. Got 1."):
        make(name).fit(images(0)[:1])


@pytest.mark.parametrize("name", NAMES)
def test_a_failed_refit_leaves_the_transformer_unfitted(name):
    transformer = make(name).fit(images(0))
    with pytest.raises(ValueError, match="non-finite"):
        transformer.fit(np.full((5, 3, 2, 3), np.nan))
    with pytest.raises(NotFittedError):
        transformer.transform(images(0))
