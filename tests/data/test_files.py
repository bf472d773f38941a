"""The user's files: .npz, .npy and .csv round trips, task inference, and the error messages."""

import numpy as np
import pytest
import torch

from gradwise.data import load_dataset

RNG = np.random.default_rng(0)


def _classification_arrays(size: int = 60, features: int = 4, num_classes: int = 3):
    x = RNG.normal(size=(size, features))
    y = np.arange(size) % num_classes
    return x, y


def _all_rows(splits) -> tuple[np.ndarray, np.ndarray]:
    parts = list(splits.splits().values())
    inputs = torch.cat([p.inputs for p in parts]).reshape(sum(map(len, parts)), -1)
    targets = torch.cat([p.targets for p in parts])
    order = torch.argsort(inputs[:, 0])
    return inputs[order].numpy(), targets[order].numpy()


def _assert_same_data(splits, x: np.ndarray, y: np.ndarray) -> None:
    inputs, targets = _all_rows(splits)
    order = np.argsort(x[:, 0].astype(np.float32))
    np.testing.assert_array_equal(inputs, x[order].astype(np.float32))
    np.testing.assert_array_equal(targets.reshape(len(targets), -1), y[order].reshape(len(y), -1))


# --- .npz ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("x_key", "y_key"), [("x", "y"), ("inputs", "targets")])
def test_npz_round_trip(tmp_path, x_key, y_key):
    x, y = _classification_arrays()
    path = tmp_path / "data.npz"
    np.savez(path, **{x_key: x, y_key: y})
    splits = load_dataset(str(path), validation_split=0.1, test_split=0.2)
    assert splits.task == "classification"
    assert splits.num_classes == 3
    assert splits.class_labels is None
    assert splits.input_shape == (4,)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (43, 5, 12)
    assert "file data.npz" in splits.description
    _assert_same_data(splits, x, y)


def test_npz_test_arrays_become_the_test_split(tmp_path):
    x, y = _classification_arrays(50)
    x_test, y_test = _classification_arrays(20)
    path = tmp_path / "data.npz"
    np.savez(path, x=x, y=y, x_test=x_test, y_test=y_test)
    splits = load_dataset(path, validation_split=0.2)  # a PathLike works too
    np.testing.assert_array_equal(splits.test.inputs.numpy(), x_test.astype(np.float32))
    assert splits.test.targets.tolist() == y_test.tolist()
    assert len(splits.train) + len(splits.validation) == 50


def test_npz_images_keep_their_shape_and_input_shape_reshapes(tmp_path):
    x = RNG.integers(0, 256, size=(30, 1, 6, 6)).astype(np.uint8)
    y = np.arange(30) % 2
    np.savez(tmp_path / "images.npz", x=x, y=y)
    splits = load_dataset(str(tmp_path / "images.npz"))
    assert splits.input_shape == (1, 6, 6)
    assert splits.train.inputs.dtype == torch.float32
    assert float(splits.train.inputs.max()) > 1  # raw values, no scaling
    np.savez(tmp_path / "flat.npz", x=x.reshape(30, 36), y=y)
    flat = load_dataset(str(tmp_path / "flat.npz"), input_shape=(1, 6, 6))
    assert flat.input_shape == (1, 6, 6)
    assert torch.equal(flat.test.inputs, splits.test.inputs)


def test_float_targets_mean_regression_and_task_overrides(tmp_path):
    x = RNG.normal(size=(40, 2))
    y = x[:, 0] * 2.5 - 1.0
    np.savez(tmp_path / "reg.npz", x=x, y=y)
    splits = load_dataset(str(tmp_path / "reg.npz"))
    assert splits.task == "regression"
    assert splits.num_classes is None
    assert splits.train.targets.shape == (len(splits.train), 1)
    assert splits.train.targets.dtype == torch.float32
    torch.testing.assert_close(
        splits.train.targets[:, 0], splits.train.inputs[:, 0] * 2.5 - 1.0, rtol=1e-5, atol=1e-5
    )
    # Whole-number targets read as classes unless told otherwise.
    np.savez(tmp_path / "counts.npz", x=x, y=np.arange(40) % 4)
    counts = load_dataset(str(tmp_path / "counts.npz"), task="regression")
    assert counts.task == "regression"
    assert counts.train.targets.dtype == torch.float32


def test_labels_other_than_0_to_k_minus_1_are_re_encoded(tmp_path):
    x = RNG.normal(size=(30, 2))
    original = np.array([3, 7, 10])[np.arange(30) % 3]
    np.savez(tmp_path / "labels.npz", x=x, y=original.astype(np.float64))
    splits = load_dataset(str(tmp_path / "labels.npz"), validation_split=0, test_split=0)
    assert splits.num_classes == 3
    assert splits.class_labels == (3, 7, 10)
    decoded = np.array(splits.class_labels)[splits.train.targets.numpy()]
    np.testing.assert_array_equal(decoded, original)


# --- .npy ---------------------------------------------------------------------------------


def test_npy_last_column_is_the_target(tmp_path):
    x, y = _classification_arrays()
    np.save(tmp_path / "table.npy", np.column_stack([x, y]))
    splits = load_dataset(str(tmp_path / "table.npy"))
    assert splits.input_shape == (4,)
    assert splits.num_classes == 3
    _assert_same_data(splits, x, y)


def test_npy_target_column_option(tmp_path):
    x, y = _classification_arrays()
    np.save(tmp_path / "table.npy", np.column_stack([y, x]))
    splits = load_dataset(str(tmp_path / "table.npy"), target=0)
    _assert_same_data(splits, x, y)


def test_npy_with_a_targets_file(tmp_path):
    x = RNG.normal(size=(40, 1, 5))
    y = np.arange(40) % 2
    np.save(tmp_path / "inputs.npy", x)
    np.save(tmp_path / "targets.npy", y)
    splits = load_dataset(str(tmp_path / "inputs.npy"), targets_path=tmp_path / "targets.npy")
    assert splits.input_shape == (1, 5)
    assert splits.num_classes == 2


def test_big_endian_files_are_read_like_native_ones(tmp_path):
    # A .npy written on a big-endian machine (or with dtype '>f4') keeps that byte order
    # when loaded; torch.tensor refused it. The oracle is the native file's splits.
    x, y = _classification_arrays()
    table = np.column_stack([x, y])
    np.save(tmp_path / "native.npy", table)
    np.save(tmp_path / "swapped.npy", table.astype(">f8"))
    np.savez(tmp_path / "swapped.npz", x=x.astype(">f4"), y=y.astype(">i8"))
    native = load_dataset(tmp_path / "native.npy", seed=3)
    for name in ("swapped.npy", "swapped.npz"):
        swapped = load_dataset(tmp_path / name, seed=3)
        for split, dataset in native.splits().items():
            assert torch.equal(swapped.splits()[split].inputs, dataset.inputs)
            assert torch.equal(swapped.splits()[split].targets, dataset.targets)


# --- .csv ---------------------------------------------------------------------------------


def _write_csv(path, rows, header=None):
    lines = [",".join(header)] if header else []
    lines += [",".join(str(value) for value in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")


def test_csv_with_header(tmp_path):
    x, y = _classification_arrays()
    _write_csv(tmp_path / "t.csv", np.column_stack([x, y]).tolist(), ["a", "b", "c", "d", "label"])
    splits = load_dataset(str(tmp_path / "t.csv"))
    assert splits.input_shape == (4,)
    _assert_same_data(splits, x, y)


def test_csv_without_header(tmp_path):
    x, y = _classification_arrays()
    _write_csv(
        tmp_path / "t.csv", [[*row, int(label)] for row, label in zip(x.tolist(), y, strict=True)]
    )
    splits = load_dataset(str(tmp_path / "t.csv"))
    assert sum(len(d) for d in splits.splits().values()) == 60  # no row taken as a header
    _assert_same_data(splits, x, y)


def test_csv_named_target_column_and_text_labels(tmp_path):
    x, _ = _classification_arrays(30, features=2)
    species = np.array(["setosa", "virginica", "versicolor"])[np.arange(30) % 3]
    rows = [[name, *row] for name, row in zip(species, x.tolist(), strict=True)]
    _write_csv(tmp_path / "iris.csv", rows, ["species", "length", "width"])
    splits = load_dataset(str(tmp_path / "iris.csv"), target="species", test_split=0)
    assert splits.class_labels == ("setosa", "versicolor", "virginica")
    assert splits.input_shape == (2,)
    inputs = torch.cat([splits.train.inputs, splits.validation.inputs])
    targets = torch.cat([splits.train.targets, splits.validation.targets])
    for features, target in zip(inputs, targets, strict=True):
        row = int(np.argmin(np.abs(x[:, 0].astype(np.float32) - features[0].item())))
        assert splits.class_labels[int(target)] == species[row]


def test_csv_text_labels_without_header(tmp_path):
    rows = [[float(i), "yes" if i % 2 else "no"] for i in range(20)]
    _write_csv(tmp_path / "t.csv", rows)
    splits = load_dataset(str(tmp_path / "t.csv"), validation_split=0, test_split=0)
    assert len(splits.train) == 20
    assert splits.class_labels == ("no", "yes")
    assert torch.equal(splits.train.targets, splits.train.inputs[:, 0].long() % 2)


def test_csv_header_option_overrides_detection(tmp_path):
    _write_csv(tmp_path / "t.csv", [[i, i % 2] for i in range(10)], ["1", "0"])
    detected = load_dataset(str(tmp_path / "t.csv"), validation_split=0, test_split=0)
    assert len(detected.train) == 11  # a numeric header cannot be detected
    forced = load_dataset(str(tmp_path / "t.csv"), header=True, validation_split=0, test_split=0)
    assert len(forced.train) == 10


def test_csv_delimiter_and_regression(tmp_path):
    rows = [[i / 10, i / 10 * 3 + 0.5] for i in range(20)]
    (tmp_path / "t.csv").write_text("x;y\n" + "\n".join(f"{a};{b}" for a, b in rows))
    splits = load_dataset(str(tmp_path / "t.csv"), delimiter=";", test_split=0, validation_split=0)
    assert splits.task == "regression"
    torch.testing.assert_close(splits.train.targets[:, 0], splits.train.inputs[:, 0] * 3 + 0.5)


def _index_csv(path, writer, x, y):
    """The table as pandas or R writes it with its row index (a shuffled pandas index, so
    the index is no row number that could be told apart by its values)."""
    import pandas as pd

    frame = pd.DataFrame(x, columns=[f"f{j}" for j in range(x.shape[1])]).assign(label=y)
    if writer == "pandas":
        frame.sample(frac=1.0, random_state=0).to_csv(path)
    elif writer == "pandas, array columns":
        pd.DataFrame(np.column_stack([x, y])).to_csv(path)
    elif writer == "R write.csv":  # quoted, an empty first header cell, row names "1".."N"
        lines = ['"",' + ",".join(f'"{c}"' for c in frame.columns)]
        lines += [f'"{i + 1}",' + ",".join(map(str, row)) for i, row in enumerate(frame.values)]
        path.write_text("\n".join(lines) + "\n")
    else:  # R write.table(sep=","): the header has no cell above the row names
        lines = [",".join(f'"{c}"' for c in frame.columns)]
        lines += [f'"r{i}",' + ",".join(map(str, row)) for i, row in enumerate(frame.values)]
        path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "writer", ["pandas", "pandas, array columns", "R write.csv", "R write.table"]
)
def test_csv_row_index_is_dropped(tmp_path, writer):
    # Read as a feature, a pandas index was a leak (sorted data: the index gives the class)
    # and R's write.table layout failed with "Expected 5 fields in line 2, saw 6".
    x, y = _classification_arrays()
    _index_csv(tmp_path / "t.csv", writer, x, y)
    splits = load_dataset(str(tmp_path / "t.csv"))
    assert splits.input_shape == (4,)
    assert splits.num_classes == 3
    assert "the row index, dropped" in splits.description
    _assert_same_data(splits, x, y)


def test_csv_target_counts_columns_after_the_row_index(tmp_path):
    x, y = _classification_arrays()
    _index_csv(tmp_path / "t.csv", "pandas", x, y)
    by_name = load_dataset(str(tmp_path / "t.csv"), target="label", seed=3)
    by_index = load_dataset(str(tmp_path / "t.csv"), target=4, seed=3)
    first_feature = load_dataset(str(tmp_path / "t.csv"), target=0, task="regression")
    assert torch.equal(by_name.train.inputs, by_index.train.inputs)
    assert first_feature.input_shape == (4,)  # f1, f2, f3 and label; no index
    assert sum(len(d) for d in first_feature.splits().values()) == 60


def test_csv_unnamed_first_column_of_measurements_is_a_feature(tmp_path):
    # An empty first header cell over measurements (no row numbers) names no index: that
    # column was loaded as a feature before row indexes were dropped, and must stay one.
    x, y = _classification_arrays()
    _write_csv(tmp_path / "t.csv", np.column_stack([x, y]).tolist(), ["", "b", "c", "d", "label"])
    splits = load_dataset(str(tmp_path / "t.csv"))
    assert splits.input_shape == (4,)
    assert "row index" not in splits.description
    _assert_same_data(splits, x, y)


def test_csv_header_false_with_r_row_names_says_what_to_do(tmp_path):
    x, y = _classification_arrays()
    _index_csv(tmp_path / "t.csv", "R write.table", x, y)
    with pytest.raises(
        ValueError,
        match=r"one cell shorter than the rows below it: a header over row names.*Got header=False; leave 'header' out",
    ):
        load_dataset(str(tmp_path / "t.csv"), header=False)


def test_csv_without_an_index_keeps_its_first_column(tmp_path):
    # A header whose first name is given is no index, whatever its values.
    x, y = _classification_arrays()
    x[:, 0] = np.arange(60)
    _write_csv(tmp_path / "t.csv", np.column_stack([x, y]).tolist(), ["id", "b", "c", "d", "label"])
    splits = load_dataset(str(tmp_path / "t.csv"))
    assert splits.input_shape == (4,)
    assert "row index" not in splits.description
    _assert_same_data(splits, x, y)


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".npz", ".npy", ".csv"])
def test_missing_file_names_the_path(tmp_path, suffix):
    path = tmp_path / f"nothing{suffix}"
    with pytest.raises(FileNotFoundError, match=f"No such data file: '{path}'"):
        load_dataset(str(path))


def test_npz_wrong_keys_lists_the_keys_found(tmp_path):
    np.savez(tmp_path / "d.npz", features=np.zeros((4, 2)), labels=np.zeros(4))
    with pytest.raises(
        ValueError, match=r"must hold arrays 'x' and 'y'.*Got keys 'features', 'labels'"
    ):
        load_dataset(str(tmp_path / "d.npz"))


def test_npz_test_inputs_without_test_targets(tmp_path):
    x, y = _classification_arrays()
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=x)
    with pytest.raises(ValueError, match="both 'x_test' and 'y_test'"):
        load_dataset(str(tmp_path / "d.npz"))


def test_npz_object_arrays_are_refused(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.array([{"a": 1}] * 4, dtype=object), y=np.zeros(4))
    with pytest.raises(ValueError, match="Could not read .* as a .npz archive"):
        load_dataset(str(tmp_path / "d.npz"))


def test_nan_inputs_give_the_count_and_first_row(tmp_path):
    x, y = _classification_arrays()
    x[7, 1] = np.nan
    x[9, 0] = np.inf
    x[9, 2] = np.nan
    np.savez(tmp_path / "d.npz", x=x, y=y)
    with pytest.raises(
        ValueError, match=r"inputs \('x'\) .* contain 3 NaN or infinite values \(the first in row 7"
    ):
        load_dataset(str(tmp_path / "d.npz"))


def test_nan_targets_give_the_count_and_first_row(tmp_path):
    x, y = _classification_arrays()
    y = y.astype(float)
    y[4] = np.nan
    np.save(tmp_path / "d.npy", np.column_stack([x, y]))
    with pytest.raises(ValueError, match=r"targets \('targets'\) .* contain 1 NaN .* row 4"):
        load_dataset(str(tmp_path / "d.npy"))


def test_csv_empty_cells_give_the_count_and_first_row(tmp_path):
    (tmp_path / "t.csv").write_text("a,b,y\n1,2,0\n3,4,1\n5,,0\n,8,\n")
    with pytest.raises(ValueError, match=r"contains 3 empty or NaN cells \(the first in row 2"):
        load_dataset(str(tmp_path / "t.csv"))


def test_csv_text_labels_that_pandas_reads_as_missing_are_classes(tmp_path):
    # pandas' default na_values made the classes "NA", "None", "null", "nan" and "N/A"
    # missing labels, and the rows were refused: labels are categories, read as written.
    classes = ["NA", "None", "cat", "null", "nan", "N/A"]
    rows = [[float(i), classes[i % 6]] for i in range(24)]
    _write_csv(tmp_path / "t.csv", rows, ["size", "label"])
    splits = load_dataset(str(tmp_path / "t.csv"), validation_split=0, test_split=0)
    assert splits.class_labels == ("N/A", "NA", "None", "cat", "nan", "null")
    labels = [splits.class_labels[int(t)] for t in splits.train.targets]
    assert labels == [classes[int(size) % 6] for size in splits.train.inputs[:, 0]]


def test_csv_empty_label_is_still_missing_among_na_classes(tmp_path):
    (tmp_path / "t.csv").write_text("a,y\n1,NA\n2,None\n3,\n4, \n5,cat\n")
    with pytest.raises(ValueError, match=r"contains 2 empty or NaN cells \(the first in row 2"):
        load_dataset(str(tmp_path / "t.csv"))


def test_csv_na_in_features_and_number_targets_is_still_missing(tmp_path):
    # Features are numbers: "NA" there is a missing value, as before. So is "NA" among
    # numeric targets (R's missing number), and among the features next to text labels.
    for text in (
        "a,b,y\n1,2,NA\n3,NA,1\n5,6,0\n",
        "a,b,y\n1,2,dog\n3,NA,None\n5,N/A,cat\n",
    ):
        (tmp_path / "t.csv").write_text(text)
        with pytest.raises(ValueError, match=r"contains 2 empty or NaN cells \(the first in row"):
            load_dataset(str(tmp_path / "t.csv"))


def test_mismatched_lengths(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((10, 2)), y=np.zeros(9))
    with pytest.raises(ValueError, match="Got 10 rows in 'x' and 9 in 'y' instead"):
        load_dataset(str(tmp_path / "d.npz"))
    np.save(tmp_path / "x.npy", np.zeros((10, 2)))
    np.save(tmp_path / "y.npy", np.zeros(11))
    with pytest.raises(ValueError, match="Got 10 rows in 'inputs' and 11 in 'targets'"):
        load_dataset(str(tmp_path / "x.npy"), targets_path=str(tmp_path / "y.npy"))


def test_csv_non_numeric_feature_names_the_column(tmp_path):
    (tmp_path / "t.csv").write_text("size,color,y\n1,red,0\n2,blue,1\n3,red,0\n")
    with pytest.raises(
        ValueError,
        match=r"The feature 'color' \(column 1\) in .* must be numbers. Got 'red' in row 0",
    ):
        load_dataset(str(tmp_path / "t.csv"))


def test_csv_target_name_must_be_in_the_header(tmp_path):
    (tmp_path / "t.csv").write_text("a,b,y\n1,2,0\n3,4,1\n")
    with pytest.raises(
        ValueError, match=r"must name a column of its header \(a, b, y\). Got 'label'"
    ):
        load_dataset(str(tmp_path / "t.csv"), target="label")
    (tmp_path / "n.csv").write_text("1,2,0\n3,4,1\n")
    with pytest.raises(ValueError, match="must be a column index: the table has no header row"):
        load_dataset(str(tmp_path / "n.csv"), target="label")


def test_target_column_index_out_of_range(tmp_path):
    np.save(tmp_path / "d.npy", np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"must be a column index in \[-3, 2\]. Got 3"):
        load_dataset(str(tmp_path / "d.npy"), target=3)


def test_npy_needs_a_table_or_a_targets_file(tmp_path):
    np.save(tmp_path / "d.npy", np.zeros((5, 2, 2)))
    with pytest.raises(ValueError, match=r"must be 2-D .* Got shape \(5, 2, 2\).* targets_path="):
        load_dataset(str(tmp_path / "d.npy"))


def test_fractional_labels_cannot_be_classes(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 1)), y=np.array([0.0, 1.0, 1.5, 2.0]))
    with pytest.raises(
        ValueError, match=r"must be whole numbers for classification. Got 1.5 in row 2"
    ):
        load_dataset(str(tmp_path / "d.npz"), task="classification")


def test_text_labels_cannot_be_regressed(tmp_path):
    (tmp_path / "t.csv").write_text("a,y\n1,cat\n2,dog\n")
    with pytest.raises(
        ValueError, match="must be numbers for regression. Got text labels such as .cat. instead"
    ):
        load_dataset(str(tmp_path / "t.csv"), task="regression")


def test_bad_input_shape(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((10, 12)), y=np.arange(10) % 2)
    with pytest.raises(
        ValueError, match=r"'input_shape' option .* must have as many values as one sample \(12"
    ):
        load_dataset(str(tmp_path / "d.npz"), input_shape=(1, 5, 5))
    with pytest.raises(
        ValueError, match=r"'input_shape' parameter of load_dataset\(.*\) must be None or a tuple"
    ):
        load_dataset(str(tmp_path / "d.npz"), input_shape=(0, 12))


def test_file_options_are_checked(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((10, 2)), y=np.arange(10) % 2)
    with pytest.raises(
        ValueError, match="unknown option 'target'; its options are: task, input_shape"
    ):
        load_dataset(str(tmp_path / "d.npz"), target=0)
    with pytest.raises(
        ValueError,
        match=r"'task' parameter .* must be None or one of 'classification', 'regression'",
    ):
        load_dataset(str(tmp_path / "d.npz"), task="ranking")


def test_text_inputs_in_npz(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.array([["a"], ["b"]]), y=np.array([0, 1]))
    with pytest.raises(
        TypeError, match=r"inputs \('x'\) in .* must be numbers. Got an array of dtype <U1"
    ):
        load_dataset(str(tmp_path / "d.npz"))


def test_npy_target_and_targets_path_are_exclusive(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((4, 2)))
    np.save(tmp_path / "y.npy", np.zeros(4))
    with pytest.raises(ValueError, match="'target' option .* must be left out when 'targets_path'"):
        load_dataset(str(tmp_path / "x.npy"), targets_path=str(tmp_path / "y.npy"), target=0)


@pytest.mark.parametrize(
    ("text", "shape"), [("a,y\n", "0 rows and 2"), ("y\n1\n2\n", "2 rows and 1")]
)
def test_csv_needs_rows_and_a_feature(tmp_path, text, shape):
    (tmp_path / "t.csv").write_text(text)
    with pytest.raises(ValueError, match=f"one data row and two columns .* Got {shape} columns"):
        load_dataset(str(tmp_path / "t.csv"))


def test_unreadable_csv(tmp_path):
    (tmp_path / "t.csv").write_text("")
    with pytest.raises(ValueError, match="Could not read .* as a CSV table"):
        load_dataset(str(tmp_path / "t.csv"))


def test_byte_string_labels_in_npz_are_classes(tmp_path):
    # np.char and h5py give byte strings (dtype S): they were read as regression targets
    # and refused as "text labels", though text labels mean classification.
    x, y = _classification_arrays()
    labels = np.array([b"cat", b"dog", b"emu"])[y]
    np.savez(tmp_path / "d.npz", x=x, y=labels)
    splits = load_dataset(str(tmp_path / "d.npz"), test_split=0, validation_split=0)
    assert (splits.task, splits.num_classes) == ("classification", 3)
    assert splits.class_labels == (b"cat", b"dog", b"emu")
    np.testing.assert_array_equal(splits.train.targets.numpy(), y)


def test_whole_number_labels_beyond_int64_keep_their_classes(tmp_path):
    # Cast to int64, 1e20, 2e20 and 3e20 all became -2**63: one class, with a
    # RuntimeWarning at most.
    x, y = _classification_arrays()
    np.savez(tmp_path / "d.npz", x=x, y=(y + 1) * 1e20)
    splits = load_dataset(str(tmp_path / "d.npz"), test_split=0, validation_split=0)
    assert (splits.task, splits.num_classes) == ("classification", 3)
    assert splits.class_labels == (1e20, 2e20, 3e20)
    np.testing.assert_array_equal(splits.train.targets.numpy(), y)
