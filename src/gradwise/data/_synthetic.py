"""Small synthetic datasets generated from the seed: 2-D classification and 1-D regression.

Each loader's keyword options, with their constraints, are in ``OPTIONS``; load_dataset
checks them before calling the loader.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gradwise._validation import NON_NEGATIVE, POSITIVE, POSITIVE_INT, Constraint, Interval
from gradwise.data._dataset import Dataset
from gradwise.data._source import Source

AT_LEAST_TWO = Interval(low=2.0, kind="int")

OPTIONS: dict[str, dict[str, Constraint]] = {
    "spirals": {
        "points_per_class": POSITIVE_INT,
        "num_classes": AT_LEAST_TWO,
        "noise": NON_NEGATIVE,
    },
    "moons": {"num_samples": AT_LEAST_TWO, "noise": NON_NEGATIVE},
    "circles": {
        "num_samples": AT_LEAST_TWO,
        "noise": NON_NEGATIVE,
        "factor": Interval(low=0.0, high=1.0, high_closed=False),
    },
    "blobs": {
        "num_samples": AT_LEAST_TWO,
        "num_classes": AT_LEAST_TWO,
        "num_features": POSITIVE_INT,
        "cluster_std": POSITIVE,
    },
    "xor": {"num_samples": AT_LEAST_TWO, "noise": NON_NEGATIVE},
    "sine": {"num_samples": AT_LEAST_TWO, "noise": NON_NEGATIVE},
}


def load_spirals(
    seed: int, *, points_per_class: int = 100, num_classes: int = 3, noise: float = 0.2
) -> Source:
    r"""The cs231n spiral: ``num_classes`` interleaved arms in the plane, not linearly separable.

    Arm :math:`k` has ``points_per_class`` points at radius :math:`r_i` evenly spaced in
    [0, 1] and angle :math:`\theta_i = 4k + 4 r_i + \epsilon_i`,
    :math:`\epsilon_i \sim \mathcal{N}(0, \text{noise}^2)`; the point is
    :math:`(r \sin\theta, r \cos\theta)` (Karpathy, CS231n "Putting it together" notes).
    """
    generator = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_classes), points_per_class)
    radius = np.tile(np.linspace(0.0, 1.0, points_per_class), num_classes)
    angle = 4.0 * labels + 4.0 * radius + noise * generator.standard_normal(labels.size)
    points = np.stack([radius * np.sin(angle), radius * np.cos(angle)], axis=1)
    return _classes(
        points,
        labels,
        num_classes,
        f"cs231n spiral, {num_classes} arms of {points_per_class} points, noise {noise}",
    )


def load_moons(seed: int, *, num_samples: int = 1000, noise: float = 0.1) -> Source:
    """Two interleaving half circles (``sklearn.datasets.make_moons``), 2 classes."""
    make_moons = _sklearn_datasets().make_moons

    points, labels = make_moons(n_samples=num_samples, noise=noise, random_state=seed)
    return _classes(points, labels, 2, f"sklearn make_moons, noise {noise}")


def load_circles(
    seed: int, *, num_samples: int = 1000, noise: float = 0.05, factor: float = 0.5
) -> Source:
    """A small circle inside a large one (``sklearn.datasets.make_circles``), 2 classes.

    ``factor`` is the ratio of the inner radius to the outer one.
    """
    make_circles = _sklearn_datasets().make_circles

    points, labels = make_circles(
        n_samples=num_samples, noise=noise, factor=factor, random_state=seed
    )
    return _classes(points, labels, 2, f"sklearn make_circles, noise {noise}, factor {factor}")


def load_blobs(
    seed: int,
    *,
    num_samples: int = 1000,
    num_classes: int = 3,
    num_features: int = 2,
    cluster_std: float = 1.0,
) -> Source:
    """Isotropic Gaussian clusters, one per class (``sklearn.datasets.make_blobs``)."""
    make_blobs = _sklearn_datasets().make_blobs

    points, labels = make_blobs(
        n_samples=num_samples,
        n_features=num_features,
        centers=num_classes,
        cluster_std=cluster_std,
        random_state=seed,
    )
    return _classes(
        points,
        labels,
        num_classes,
        f"sklearn make_blobs, {num_features} features, std {cluster_std}",
    )


def load_xor(seed: int, *, num_samples: int = 1000, noise: float = 0.0) -> Source:
    r"""XOR: points uniform in :math:`[-1, 1]^2`, class 1 where the coordinates' signs differ.

    ``noise`` is the standard deviation of Gaussian jitter added after labelling.
    """
    generator = np.random.default_rng(seed)
    points = generator.uniform(-1.0, 1.0, size=(num_samples, 2))
    labels = ((points[:, 0] > 0) != (points[:, 1] > 0)).astype(np.int64)
    points = points + noise * generator.standard_normal(points.shape)
    return _classes(points, labels, 2, f"XOR of coordinate signs, noise {noise}")


def load_sine(seed: int, *, num_samples: int = 1000, noise: float = 0.1) -> Source:
    r"""Regression: :math:`y = \sin x + \epsilon`, :math:`x \sim U[-\pi, \pi]`.

    :math:`\epsilon \sim \mathcal{N}(0, \text{noise}^2)`. Inputs and targets are ``(N, 1)``.
    """
    generator = np.random.default_rng(seed)
    x = generator.uniform(-math.pi, math.pi, size=(num_samples, 1))
    y = np.sin(x) + noise * generator.standard_normal(x.shape)
    return Source(
        data=Dataset.from_arrays(x, y),
        task="regression",
        num_classes=None,
        source=f"y = sin(x) + noise, x uniform in [-pi, pi], noise {noise}",
    )


def _classes(points: np.ndarray, labels: np.ndarray, num_classes: int, source: str) -> Source:
    return Source(
        data=Dataset.from_arrays(points, labels.astype(np.int64)),
        task="classification",
        num_classes=num_classes,
        source=source,
    )


def _sklearn_datasets() -> Any:
    # Imported on use, so that importing gradwise does not import scikit-learn.
    import sklearn.datasets  # type: ignore[import-untyped]

    return sklearn.datasets
