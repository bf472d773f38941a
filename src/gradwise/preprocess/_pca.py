r"""PCA and whitening from one eigendecomposition of the float64 covariance.

Conventions (see docs/preprocess.md):

- The covariance is :math:`C = X_c^\top X_c / N` with :math:`X_c` the centered training
  data (the lectures' formula); scikit-learn's ``explained_variance_`` divides by
  :math:`N - 1`, so its whitened data are ours times :math:`\sqrt{(N-1)/N}`.
- :math:`C = U \operatorname{diag}(S) U^\top` by ``torch.linalg.eigh``, eigenvalues sorted
  in decreasing order and clamped at 0 (rounding can make them slightly negative). Each
  eigenvector is signed so that its largest-magnitude entry is positive, which makes the
  results reproducible (the same rule as scikit-learn's ``svd_flip`` on components).
- ``(N, C, ...)`` data are flattened to ``(N, D)`` with :math:`D = C \cdots`: ``mean_`` and
  ``components_`` are flat, and ZCA's output and every ``inverse_transform`` come back in
  the sample shape seen by ``fit``.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any, final

import torch
from torch import Tensor

from gradwise._validation import (
    NON_NEGATIVE,
    Either,
    Satisfies,
    invalid_value_error,
)
from gradwise.preprocess._base import Transformer, warn_constant


def _is_count(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, Integral):
        return False
    return int(value) >= 1


def _is_fraction(value: Any) -> bool:
    if isinstance(value, Integral) or not isinstance(value, Real):
        return False
    return 0.0 < float(value) < 1.0


N_COMPONENTS = Either(
    (
        Satisfies(_is_count, "an int >= 1"),
        Satisfies(_is_fraction, "a float in (0, 1)"),
        Satisfies(lambda value: value is None, "None"),
    )
)


def eigenbasis(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r"""Mean, eigenvalues (decreasing, >= 0) and eigenvectors (rows) of the covariance of ``x``.

    One matmul over the data builds the :math:`D \times D` covariance; ``eigh`` on it costs
    :math:`O(D^3)`, independent of :math:`N`. (100,000 x 784 float64: about 2.7 s for the
    matmul and 0.1 s for ``eigh`` on one thread of this project's machines.)
    """
    flat = x.reshape(x.shape[0], -1)  # (N, D)
    mean = flat.mean(dim=0)
    centered = flat - mean
    covariance = centered.T @ centered / flat.shape[0]  # (D, D)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending; columns
    eigenvalues = eigenvalues.flip(0).clamp(min=0.0)
    components = eigenvectors.flip(1).T  # (D, D); row i is the i-th direction
    largest = components.abs().argmax(dim=1, keepdim=True)
    signs = torch.sign(components.gather(1, largest))  # (D, 1)
    return mean, eigenvalues, (components * signs).contiguous()


def _num_kept(n_components: Any, eigenvalues: Tensor, num_samples: int, owner: str) -> int:
    r"""How many leading components ``n_components`` asks for (None: all :math:`D`).

    An int is refused above :math:`\min(N, D)`, as scikit-learn does: :math:`N` centered
    samples span at most :math:`N - 1` directions, so with :math:`N < D` the components
    past that are an arbitrary basis of directions along which the data do not vary.
    None keeps all :math:`D` (an orthogonal rotation, exactly invertible); see the docs.
    """
    num_features = eigenvalues.shape[0]
    if n_components is None:
        return num_features
    if _is_count(n_components):
        if n_components > min(num_samples, num_features):
            raise _too_many_components(n_components, num_samples, num_features, owner)
        return int(n_components)
    cumulative = torch.cumsum(eigenvalues, 0) / _total(eigenvalues)
    # The smallest k whose leading k components explain at least the fraction.
    return min(int((cumulative < n_components).sum()) + 1, num_features)


def _too_many_components(
    n_components: int, num_samples: int, num_features: int, owner: str
) -> ValueError:
    if num_features <= num_samples:
        expected = f"an int <= {num_features} (the number of features) or a float in (0, 1)"
        return invalid_value_error("n_components", owner, expected, n_components)
    expected = f"an int <= {num_samples} (the number of samples) or a float in (0, 1)"
    error = invalid_value_error("n_components", owner, expected, n_components)
    return ValueError(
        f"{error} Once centered, {num_samples} samples of {num_features} features vary "
        f"along at most {num_samples - 1} directions; the other components are an "
        "arbitrary basis of directions of zero variance. Pass n_components <= "
        f"{num_samples - 1} to keep only directions that vary (or a float in (0, 1) for a "
        "fraction of the variance), or fit on more samples."
    )


def _total(eigenvalues: Tensor) -> Tensor:
    # All-constant data have zero total variance: ratios 0, not 0 / 0.
    return eigenvalues.sum().clamp(min=torch.finfo(torch.float64).tiny)


def _whitening_scale(eigenvalues: Tensor, kept: int, eps: float, owner: str) -> Tensor:
    r""":math:`\sqrt{S + \epsilon}` of the kept directions; 1 where that is numerically 0."""
    # An eigenvalue below max(S) * D * machine epsilon is rounding noise, i.e. zero.
    tolerance = eigenvalues[0] * eigenvalues.shape[0] * torch.finfo(torch.float64).eps
    kept_values = eigenvalues[:kept]
    zero = kept_values + eps <= tolerance
    bound = float(tolerance)
    consequence = (
        f"with eps={eps} they would be divided by 0, so their scale is set to 1. "
        "Pass eps > 0 (e.g. 1e-5) or drop constant features."
        if eps == 0
        else f"eps={eps} is below this data's rounding noise ({bound:.3g}: max(S) * D * "
        "2.2e-16), so they would be divided by noise; their scale is set to 1. Pass eps > "
        f"{bound:.3g} or drop constant features."
    )
    warn_constant(owner, zero, "direction", consequence)
    scale = torch.sqrt(kept_values + eps)
    return torch.where(zero, torch.ones_like(scale), scale)


class _Eigenbasis(Transformer):
    """What PCA and the whitenings share: the fitted basis and the flat layout."""

    mean_: Tensor
    components_: Tensor
    explained_variance_: Tensor
    explained_variance_ratio_: Tensor

    @property
    def n_components_(self) -> int:
        """The number of kept components."""
        self._check_fitted()
        return int(self.components_.shape[0])

    def _layout(self) -> str:
        return "feature"

    def _fit_basis(self, x: Tensor, n_components: Any) -> Tensor:
        """Set the basis attributes for the kept components; return all eigenvalues."""
        self.mean_, eigenvalues, components = eigenbasis(x)
        kept = _num_kept(n_components, eigenvalues, x.shape[0], type(self).__name__)
        self.components_ = components[:kept]
        self.explained_variance_ = eigenvalues[:kept]
        self.explained_variance_ratio_ = self.explained_variance_ / _total(eigenvalues)
        return eigenvalues

    def _project(self, x: Tensor) -> Tensor:
        flat = x.flatten(1)  # (N, D); reshape(N, -1) is ambiguous for N = 0
        return (flat - self.mean_.to(x.device)) @ self.components_.to(x.device).T  # (N, k)

    def _check_projected(self, projected: Tensor) -> None:
        kept = self.n_components_
        if projected.ndim != 2 or projected.shape[1] != kept:
            raise ValueError(
                f"X has shape {tuple(projected.shape)}, but this {type(self).__name__} "
                f"outputs {kept} components: inverse_transform expects shape (N, {kept})."
            )

    def _reconstruct(self, projected: Tensor) -> Tensor:
        self._check_projected(projected)
        device = projected.device
        flat = projected @ self.components_.to(device) + self.mean_.to(device)  # (N, D)
        return flat.reshape(projected.shape[0], *self.sample_shape_)


@final
class PCA(_Eigenbasis):
    r"""Project onto the leading principal components: :math:`x' = U_k^\top (x - \mu)`.

    :math:`U_k` holds the :math:`k` eigenvectors of the training covariance
    :math:`C = X_c^\top X_c / N` with the largest eigenvalues :math:`S_1 \ge S_2 \ge \dots`.
    ``inverse_transform`` maps back: :math:`\hat x = U_k x' + \mu`, the best rank-:math:`k`
    reconstruction; its mean squared error over the training samples,
    :math:`\frac1N \sum_n \lVert x_n - \hat x_n \rVert^2`, is the sum of the discarded
    eigenvalues :math:`\sum_{i > k} S_i`. ``(N, C, ...)`` data are flattened to ``(N, D)``
    first, and ``inverse_transform`` restores the sample shape.

    Fit on the training split only: statistics computed on validation or test data leak
    information about them into training.

    Args:
        n_components: :math:`k`: an int at most :math:`\min(N, D)` (as in
            scikit-learn), a float in (0, 1) for the smallest :math:`k` whose components
            explain at least that fraction of the variance, or None (default) for all
            :math:`D`. With :math:`N \le D`, the centered training data vary along at
            most :math:`N - 1` directions: None still keeps all :math:`D` components (an
            exactly invertible rotation), and those past :math:`N - 1` have variance 0
            and an arbitrary, though reproducible, orientation within that subspace. A
            float never keeps them.

    Attributes:
        mean_: :math:`\mu`, shape ``(D,)``.
        components_: :math:`U_k^\top`, shape ``(k, D)``, one direction per row.
        explained_variance_: :math:`S_1, \dots, S_k` (divided by :math:`N`).
        explained_variance_ratio_: :math:`S_i / \sum_j S_j`.
        n_components_: :math:`k`.

    Example:
        >>> import torch
        >>> from gradwise.preprocess import PCA
        >>> data = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
        >>> pca = PCA(n_components=1).fit(data)
        >>> pca.transform(data)
        tensor([[-1.4142],
                [ 0.0000],
                [ 1.4142]])
        >>> pca.inverse_transform(pca.transform(data))
        tensor([[1., 1.],
                [2., 2.],
                [3., 3.]])
    """

    parameter_constraints = {"n_components": N_COMPONENTS}

    def __init__(self, n_components: int | float | None = None) -> None:
        self.n_components = n_components
        self._check_parameters()

    def _fit(self, x: Tensor) -> None:
        self._fit_basis(x, self.n_components)

    def _transform(self, x: Tensor) -> Tensor:
        return self._project(x)

    def _inverse(self, x: Tensor) -> Tensor:
        return self._reconstruct(x)


@final
class PCAWhiten(_Eigenbasis):
    r"""PCA whitening: :math:`x' = \operatorname{diag}(S_k + \epsilon)^{-1/2} U_k^\top (x - \mu)`.

    The lectures' ``Xrot / np.sqrt(S + 1e-5)``: rotate into the eigenbasis of the training
    covariance (see :class:`PCA`) and divide each component by its standard deviation.
    With :math:`\epsilon = 0` the whitened training data have identity covariance
    (:math:`X'^\top X' / N = I`); :math:`\epsilon > 0` keeps near-zero-variance directions
    (noise) from being blown up. With ``eps=0``, a direction of zero variance gets scale 1
    and a :class:`ConstantFeatureWarning`, instead of a division by zero.

    ``inverse_transform`` multiplies back and rotates out: exact when all components are
    kept, the rank-:math:`k` reconstruction of :class:`PCA` when fewer are.

    The statistics are float64 whatever the input dtype, and so is the arithmetic of
    ``transform``, which rounds once to the output dtype.

    Fit on the training split only: statistics computed on validation or test data leak
    information about them into training.

    Args:
        n_components: as for :class:`PCA`; default None (all).
        eps: :math:`\epsilon \ge 0`, added to each eigenvalue; default 1e-5 as in the
            lectures (which assumes data scaled to about [0, 1]).

    Attributes:
        mean_, components_, explained_variance_, explained_variance_ratio_,
            n_components_: as for :class:`PCA`.
        scale_: :math:`\sqrt{S_i + \epsilon}`, the divisor of each kept component.

    Example:
        >>> import torch
        >>> from gradwise.preprocess import PCAWhiten
        >>> mixing = torch.tensor([[2.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 3.0, 0.5]])
        >>> data = torch.randn(1000, 3, dtype=torch.float64) @ mixing.double()
        >>> white = PCAWhiten(eps=0.0).fit_transform(data)
        >>> torch.allclose(white.T @ white / 1000, torch.eye(3, dtype=torch.float64))
        True
    """

    parameter_constraints = {"n_components": N_COMPONENTS, "eps": NON_NEGATIVE}

    scale_: Tensor

    def __init__(self, n_components: int | float | None = None, eps: float = 1e-5) -> None:
        self.n_components = n_components
        self.eps = eps
        self._check_parameters()

    def _fit(self, x: Tensor) -> None:
        eigenvalues = self._fit_basis(x, self.n_components)
        kept = self.components_.shape[0]
        self.scale_ = _whitening_scale(eigenvalues, kept, float(self.eps), "PCAWhiten")

    def _transform(self, x: Tensor) -> Tensor:
        return self._project(x) / self.scale_.to(x.device)

    def _inverse(self, x: Tensor) -> Tensor:
        self._check_projected(x)
        return self._reconstruct(x * self.scale_.to(x.device))


@final
class ZCAWhiten(_Eigenbasis):
    r"""ZCA whitening: :math:`x' = U \operatorname{diag}(S + \epsilon)^{-1/2} U^\top (x - \mu)`.

    PCA whitening rotated back into the input space (Bell & Sejnowski 1997): of all
    whitening transforms it changes the data least, i.e. it minimizes
    :math:`\lVert X_c - X' \rVert` (Kessy, Lewin & Strimmer 2018), so whitened images
    still look like images. The output has the input's shape; ``(N, C, H, W)`` data are
    whitened as ``(N, C*H*W)`` vectors and reshaped back. The :math:`D \times D` matrix
    ``whitening_`` is computed once in ``fit``. With :math:`\epsilon = 0` the whitened
    training data have identity covariance; a zero-variance direction then gets scale 1
    and a :class:`ConstantFeatureWarning`. ``inverse_transform`` is exact.

    The statistics are float64 whatever the input dtype, and so is the arithmetic of
    ``transform``, which rounds once to the output dtype.

    Fit on the training split only: statistics computed on validation or test data leak
    information about them into training.

    Args:
        eps: :math:`\epsilon \ge 0`; default 1e-5 as in the lectures.

    Attributes:
        mean_, components_, explained_variance_, explained_variance_ratio_: as for
            :class:`PCA`, all :math:`D` components.
        scale_: :math:`\sqrt{S_i + \epsilon}`.
        whitening_: :math:`U \operatorname{diag}(1 / \text{scale\_}) U^\top`, shape
            ``(D, D)``, symmetric.

    Example:
        >>> import torch
        >>> from gradwise.preprocess import ZCAWhiten
        >>> images = torch.rand(500, 2, 3, 3, dtype=torch.float64)
        >>> zca = ZCAWhiten(eps=0.0).fit(images)
        >>> white = zca.transform(images)
        >>> white.shape
        torch.Size([500, 2, 3, 3])
        >>> flat = white.reshape(500, -1)
        >>> torch.allclose(flat.T @ flat / 500, torch.eye(18, dtype=torch.float64))
        True

    References:
        A. J. Bell and T. J. Sejnowski, "The 'independent components' of natural scenes
        are edge filters", Vision Research, 1997. A. Kessy, I. Lewin and K. Strimmer,
        "Optimal whitening and decorrelation", The American Statistician, 2018.
    """

    parameter_constraints = {"eps": NON_NEGATIVE}

    scale_: Tensor
    whitening_: Tensor

    def __init__(self, eps: float = 1e-5) -> None:
        self.eps = eps
        self._check_parameters()

    def _fit(self, x: Tensor) -> None:
        eigenvalues = self._fit_basis(x, None)
        self.scale_ = _whitening_scale(
            eigenvalues, eigenvalues.shape[0], float(self.eps), "ZCAWhiten"
        )
        self.whitening_ = (self.components_.T / self.scale_) @ self.components_  # (D, D)

    def _transform(self, x: Tensor) -> Tensor:
        flat = x.flatten(1)  # (N, D)
        white = (flat - self.mean_.to(x.device)) @ self.whitening_.to(x.device)
        return white.reshape(x.shape)

    def _inverse(self, x: Tensor) -> Tensor:
        self._check_layout(x, "feature")
        coloring = (self.components_.T * self.scale_) @ self.components_  # (D, D)
        flat = x.flatten(1) @ coloring.to(x.device) + self.mean_.to(x.device)
        return flat.reshape(x.shape)
