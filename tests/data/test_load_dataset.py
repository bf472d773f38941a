"""load_dataset's boundary: names, options, argument errors, lazy imports, global state."""

import subprocess
import sys
import textwrap

import pytest

from gradwise.data import load_dataset


def test_unknown_name_lists_the_valid_names_and_the_closest_match():
    with pytest.raises(ValueError, match="Did you mean 'mnist1d'") as error:
        load_dataset("mnist_1d")
    message = str(error.value)
    assert "The 'name' parameter of load_dataset must be one of blobs, circles, digits" in message
    assert ".npz, .npy or .csv" in message
    assert "Got 'mnist_1d' instead." in message


def test_unknown_name_without_close_match_has_no_hint():
    with pytest.raises(ValueError, match="Got 'imagenet' instead.$"):
        load_dataset("imagenet")


def test_name_must_be_a_string_or_path():
    with pytest.raises(TypeError, match="must be a dataset name or a file path. Got 3 instead"):
        load_dataset(3)


def test_unsupported_file_suffix_is_an_unknown_name():
    with pytest.raises(ValueError, match=r"or a path ending in .npz, .npy or .csv. Got 'data.txt'"):
        load_dataset("data.txt")


def test_unknown_option_lists_the_loaders_options():
    with pytest.raises(
        ValueError,
        match=r"load_dataset\('spirals'\) got an unknown option 'nosie'; its options are: "
        r"points_per_class, num_classes, noise. Did you mean 'noise'\?",
    ):
        load_dataset("spirals", nosie=0.1)


def test_built_ins_without_options_say_so():
    with pytest.raises(ValueError, match="its options are: none"):
        load_dataset("digits", size=10)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"validation_split": 1.0},
            r"'validation_split' parameter of load_dataset must be a float in \[0, 1\)",
        ),
        (
            {"test_split": -0.1},
            r"'test_split' parameter of load_dataset must be a float in \[0, 1\)",
        ),
        ({"seed": -1}, r"'seed' parameter of load_dataset must be an int in \[0, 4294967295\]"),
        ({"seed": 2**32}, r"'seed' parameter of load_dataset must be an int"),
        (
            {"noise": -1.0},
            r"'noise' parameter of load_dataset\('spirals'\) must be a finite float >= 0\. Got -1",
        ),
        (
            {"noise": float("inf")},
            r"'noise' parameter of load_dataset\('spirals'\) must be a finite float >= 0\. Got inf",
        ),
        ({"points_per_class": 0}, r"'points_per_class' parameter of load_dataset\('spirals'\)"),
        (
            {"num_classes": 1},
            r"'num_classes' parameter of load_dataset\('spirals'\) must be an int >= 2",
        ),
    ],
)
def test_bad_arguments_use_the_one_error_format(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_dataset("spirals", **kwargs)


def test_splits_too_small_to_hold_out_say_so():
    with pytest.raises(ValueError, match="cannot hold out .* one split would be empty"):
        load_dataset("moons", num_samples=2, test_split=0.1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"num_samples": 2, "test_split": 0.1},
            r"load_dataset\('moons'\) cannot hold out test_split=0.1 of 2 samples: .*"
            r"\(the held-out split: 0.1 \* 2 rounds to 0\).* or test_split=0 for no test split",
        ),
        (
            # 5 samples, 1 to the test split: the 4 left are what validation_split divides.
            {"num_samples": 5},
            r"cannot hold out validation_split=0.1 of 4 samples left after the test split: .*"
            r" or validation_split=0 for no validation split\.$",
        ),
        (
            {"num_samples": 4, "test_split": 0.9},
            r"test_split=0.9 of 4 samples: one split would be empty \(the rest: 0.9 \* 4",
        ),
    ],
)
def test_a_split_too_small_names_the_fraction_that_empties_it(kwargs, match):
    # The message named neither the parameter nor the samples it applied to: "moons cannot
    # hold out 0.1 of 4 samples" for a 5-sample set with the defaults.
    with pytest.raises(ValueError, match=match):
        load_dataset("moons", **kwargs)


def test_importing_gradwise_data_does_not_import_the_loaders_libraries():
    script = textwrap.dedent(
        """
        import sys
        import gradwise.data
        libraries = ("mnist1d", "mlxtend", "sklearn", "pandas", "matplotlib")
        print("heavy:", [m for m in libraries if m in sys.modules])
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert "heavy: []" in result.stdout
