"""PCA, PCAWhiten and ZCAWhiten against closed-form facts, NumPy and scikit-learn.

Covariances here divide by N (gradwise's convention, the lectures' formula); NumPy's
eigvalsh of that covariance is the independent oracle for the eigenvalues.
"""

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA as SklearnPCA

from gradwise.preprocess import PCA, ConstantFeatureWarning, PCAWhiten, ZCAWhiten

N, D = 400, 8


def correlated(seed, n=N, d=D, offset=3.0):
    rng = np.random.default_rng(seed)
    spread = np.logspace(0, -2, d)
    basis, _ = np.linalg.qr(np.random.default_rng(99).normal(size=(d, d)))
    return (rng.normal(size=(n, d)) * spread) @ basis.T + offset + np.arange(d)


def covariance(x):
    centered = x - x.mean(axis=0)
    return centered.T @ centered / x.shape[0]


def eigenvalues(x):
    return np.linalg.eigvalsh(covariance(x))[::-1]


def random_orthogonal(rng, d):
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


@pytest.mark.parametrize("whiten", [PCAWhiten, ZCAWhiten])
def test_whitened_training_data_have_identity_covariance(whiten):
    train = correlated(0)
    white = whiten(eps=0.0).fit_transform(train)
    np.testing.assert_allclose(white.mean(axis=0), 0.0, atol=1e-10)
    np.testing.assert_allclose(covariance(white), np.eye(D), rtol=0, atol=1e-6)
    assert np.abs(covariance(white) - np.eye(D)).max() < 1e-6


def test_eps_shrinks_each_direction_by_s_over_s_plus_eps():
    train = correlated(0)
    eps = 1e-3
    white = PCAWhiten(eps=eps).fit_transform(train)
    spectrum = eigenvalues(train)
    np.testing.assert_allclose(covariance(white), np.diag(spectrum / (spectrum + eps)), atol=1e-9)
    zca = ZCAWhiten(eps=eps).fit_transform(train)
    np.testing.assert_allclose(
        np.linalg.eigvalsh(covariance(zca))[::-1], spectrum / (spectrum + eps)
    )


def test_zca_output_is_the_whitening_closest_to_the_input():
    train = correlated(1)
    zca_distance = np.linalg.norm(train - ZCAWhiten(eps=0.0).fit_transform(train))
    pca_white = PCAWhiten(eps=0.0).fit_transform(train)
    rng = np.random.default_rng(0)
    rotations = [np.eye(D), np.diag(rng.choice([-1.0, 1.0], size=D))]
    rotations += [random_orthogonal(rng, D) for _ in range(50)]
    for rotation in rotations:
        other = pca_white @ rotation
        # every rotation of whitened data is a whitening too ...
        np.testing.assert_allclose(covariance(other), np.eye(D), atol=1e-8)
        # ... and none of them is closer to the input than ZCA.
        assert np.linalg.norm(train - other) > zca_distance


def test_zca_equals_pca_whitening_rotated_back():
    train = correlated(2)
    pca = PCAWhiten(eps=1e-4).fit(train)
    zca = ZCAWhiten(eps=1e-4).fit(train)
    np.testing.assert_allclose(
        zca.transform(train), pca.transform(train) @ pca.components_.numpy(), atol=1e-10
    )


@pytest.mark.parametrize("kept", range(1, D + 1))
def test_pca_reconstruction_error_is_the_sum_of_discarded_eigenvalues(kept):
    train = correlated(3)
    pca = PCA(kept).fit(train)
    reconstruction = pca.inverse_transform(pca.transform(train))
    mean_squared_error = np.mean(np.sum((train - reconstruction) ** 2, axis=1))
    np.testing.assert_allclose(
        mean_squared_error, eigenvalues(train)[kept:].sum(), rtol=1e-8, atol=1e-13
    )


@pytest.mark.parametrize("fraction", [0.05, 0.5, 0.9, 0.99, 0.9999])
def test_variance_fraction_picks_the_smallest_sufficient_k(fraction):
    train = correlated(4)
    pca = PCA(fraction).fit(train)
    spectrum = eigenvalues(train)
    explained = np.cumsum(spectrum) / spectrum.sum()
    k = pca.n_components_
    assert explained[k - 1] >= fraction
    assert k == 1 or explained[k - 2] < fraction
    assert k == SklearnPCA(n_components=fraction).fit(train).n_components_
    assert pca.transform(train).shape == (N, k)
    np.testing.assert_allclose(
        pca.explained_variance_ratio_.numpy(), explained[:k] - np.r_[0, explained[: k - 1]]
    )


def test_agrees_with_sklearn_pca_up_to_signs_and_the_n_minus_1_factor():
    train, test = correlated(5), correlated(6, n=50)
    oracle = SklearnPCA(whiten=True).fit(train)
    ours = PCAWhiten(eps=0.0).fit(train)
    signs = np.sign(np.sum(ours.components_.numpy() * oracle.components_, axis=1))
    np.testing.assert_allclose(
        ours.components_.numpy(), oracle.components_ * signs[:, None], atol=1e-9
    )
    # scikit-learn divides the covariance by N - 1, gradwise by N.
    np.testing.assert_allclose(
        ours.explained_variance_.numpy() * N / (N - 1),
        oracle.explained_variance_,
        rtol=1e-10,
        atol=1e-12,  # forming the covariance costs about eps * S_max in absolute terms
    )
    np.testing.assert_allclose(
        ours.explained_variance_ratio_.numpy(), oracle.explained_variance_ratio_
    )
    np.testing.assert_allclose(
        ours.transform(test) * np.sqrt((N - 1) / N), oracle.transform(test) * signs, atol=1e-8
    )
    np.testing.assert_allclose(
        PCA(3).fit(train).transform(test),
        SklearnPCA(3).fit(train).transform(test) * signs[:3],
        atol=1e-9,
    )


def test_sign_convention_makes_each_components_largest_entry_positive():
    train = correlated(7)
    components = PCA().fit(train).components_.numpy()
    largest = components[np.arange(D), np.abs(components).argmax(axis=1)]
    assert (largest > 0).all()
    shuffled = train[np.random.default_rng(0).permutation(N)]
    np.testing.assert_allclose(PCA().fit(shuffled).components_.numpy(), components, atol=1e-10)
    np.testing.assert_allclose(components @ components.T, np.eye(D), atol=1e-12)


def test_images_are_flattened_and_zca_reshapes_back():
    flat = correlated(8, d=12)
    images = flat.reshape(N, 3, 2, 2)
    zca = ZCAWhiten().fit(images)
    assert zca.transform(images).shape == (N, 3, 2, 2)
    np.testing.assert_array_equal(
        zca.transform(images).reshape(N, 12), ZCAWhiten().fit(flat).transform(flat)
    )
    assert zca.mean_.shape == (12,)
    assert zca.whitening_.shape == (12, 12)
    pca = PCA(5).fit(torch.from_numpy(images))
    assert pca.transform(torch.from_numpy(images)).shape == (N, 5)
    assert pca.inverse_transform(pca.transform(torch.from_numpy(images))).shape == (N, 3, 2, 2)
    assert PCAWhiten(5).fit(images).inverse_transform(np.zeros((2, 5))).shape == (2, 3, 2, 2)


@pytest.mark.parametrize("transformer", [PCA(3), PCAWhiten(3), ZCAWhiten()], ids=repr)
def test_an_empty_batch_transforms_to_an_empty_batch(transformer):
    # Reshaping (0, C, H, W) to (0, -1) is ambiguous: this used to raise torch's RuntimeError.
    images = correlated(15, d=12).reshape(N, 3, 2, 2)
    transformer.fit(images)
    empty = images[:0]
    out = transformer.transform(empty)
    assert out.shape == (0, *transformer.transform(images).shape[1:])
    assert transformer.inverse_transform(out).shape == (0, 3, 2, 2)
    tensor_out = transformer.transform(torch.from_numpy(empty).float())
    assert tensor_out.shape == out.shape
    assert tensor_out.dtype == torch.float32


@pytest.mark.parametrize("whiten", [PCAWhiten, ZCAWhiten])
def test_float32_whitening_uses_float64_statistics_and_rounds_once(whiten):
    """Pixel-like data with a large mean and a 1e4 spread of variances: computed in float32
    arithmetic, whitening loses about 1e-4 (relative rms) here; gradwise rounds once."""
    rng = np.random.default_rng(9)
    basis, _ = np.linalg.qr(rng.normal(size=(40, 40)))
    data = (rng.normal(size=(2000, 40)) * np.logspace(0, -2, 40)) @ basis.T + 100.0
    data32 = data.astype(np.float32)
    exact = data32.astype(np.float64)  # the values the transformer actually receives
    spectrum, vectors = np.linalg.eigh(covariance(exact))
    eps = 1e-5
    mean = exact.mean(axis=0)
    rotated = (exact - mean) @ vectors / np.sqrt(spectrum + eps)
    expected = rotated @ vectors.T if whiten is ZCAWhiten else rotated[:, ::-1]
    out = whiten(eps=eps).fit_transform(data32)
    assert out.dtype == np.float32
    if whiten is PCAWhiten:
        out = out * np.sign(np.sum(out * expected, axis=0))  # eigenvector signs
    error = np.sqrt(np.mean((out - expected) ** 2) / np.mean(expected**2))
    assert error < 1e-7
    ours = whiten(eps=eps).fit(data32)
    assert ours.mean_.dtype == torch.float64
    np.testing.assert_allclose(
        ours.explained_variance_.numpy(), spectrum[::-1], rtol=1e-9, atol=1e-16
    )


@pytest.mark.parametrize("whiten", [PCAWhiten, ZCAWhiten])
def test_zero_variance_directions_with_eps_zero_warn_and_give_no_nan(whiten):
    train = correlated(10)
    train = np.column_stack([train, np.full(N, 5.0), train[:, 0] - train[:, 1]])  # rank D
    with pytest.warns(ConstantFeatureWarning, match=r"2 directions are constant .*indices 8, 9\)"):
        transformer = whiten(eps=0.0).fit(train)
    white = transformer.transform(train)
    assert np.isfinite(white).all()
    spectrum = np.linalg.eigvalsh(covariance(white))[::-1]
    np.testing.assert_allclose(spectrum[:D], 1.0, atol=1e-6)
    np.testing.assert_allclose(spectrum[D:], 0.0, atol=1e-6)


def test_whitening_with_eps_does_not_warn_on_constant_data():
    train = np.column_stack([correlated(11), np.full(N, 1.0)])
    white = ZCAWhiten().fit_transform(train)  # warnings are errors here
    assert np.isfinite(white).all()


def test_whitening_with_an_eps_below_the_rounding_noise_says_which_eps_would_do():
    # Features on the scale of 1e6 (variance 1e12): the constant direction's bound is
    # about 1e12 * 9 * 2.2e-16 = 2e-3, above the default eps (the message said "divided
    # by 0", and the docs that eps > 0 never warns).
    train = np.column_stack([correlated(11) * 1e6, np.full(N, 1.0)])
    with pytest.warns(ConstantFeatureWarning, match=r"eps=1e-05 is below this data's rounding"):
        ZCAWhiten().fit(train)
    ZCAWhiten(eps=1e-2).fit(train)  # above the bound: nothing to warn about


def test_pca_whiten_inverse_is_exact_with_all_components_and_pca_reconstruction_otherwise():
    train, test = correlated(12), correlated(13, n=30)
    full = PCAWhiten(eps=1e-3).fit(train)
    np.testing.assert_allclose(full.inverse_transform(full.transform(test)), test, atol=1e-10)
    partial = PCAWhiten(3, eps=1e-3).fit(train)
    pca = PCA(3).fit(train)
    np.testing.assert_allclose(
        partial.inverse_transform(partial.transform(test)),
        pca.inverse_transform(pca.transform(test)),
        atol=1e-10,
    )


def test_pca_with_all_components_is_a_rotation():
    train = correlated(14)
    pca = PCA().fit(train)
    rotated = pca.transform(train)
    np.testing.assert_allclose(covariance(rotated), np.diag(eigenvalues(train)), atol=1e-10)
    np.testing.assert_allclose(pca.inverse_transform(rotated), train, atol=1e-10)


def test_with_fewer_samples_than_features_none_keeps_all_d_and_the_rest_have_no_variance():
    # The documented choice for N < D: None keeps all D components (unlike scikit-learn's
    # min(N, D)), so PCA stays an exactly invertible rotation; past N - 1 the variance is 0.
    train = np.random.default_rng(5).normal(size=(5, 10))
    pca = PCA().fit(train)
    assert pca.n_components_ == 10
    np.testing.assert_allclose(pca.explained_variance_[:4].numpy(), eigenvalues(train)[:4])
    np.testing.assert_allclose(pca.explained_variance_[4:].numpy(), 0.0, atol=1e-14)
    components = pca.components_.numpy()
    np.testing.assert_allclose(components @ components.T, np.eye(10), atol=1e-12)
    test = np.random.default_rng(6).normal(size=(3, 10))
    np.testing.assert_allclose(pca.inverse_transform(pca.transform(test)), test, atol=1e-12)
    # A fraction keeps only directions that vary, as scikit-learn's does.
    assert PCA(0.999999).fit(train).n_components_ == 4
    assert SklearnPCA(0.999999).fit(train).n_components_ == 4
