"""User entry points: every accepted return form, kwargs, the working directory, and errors."""

import itertools
import sys
import textwrap

import pytest
import torch
from torch import nn

from gradwise.data import DataSplits, EntryPoint, load_entry_point

_COUNTER = itertools.count()

_HEADER = """
import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset
from gradwise.data import DataSplits, Dataset


def pair(n, classes=3, offset=0):
    x = torch.arange(offset, offset + n, dtype=torch.float32).reshape(n, 1).repeat(1, 2)
    return x, torch.arange(n) % classes
"""


@pytest.fixture
def write_module(tmp_path, monkeypatch):
    """Write a module with a unique name into tmp_path, importable for this test only."""
    monkeypatch.syspath_prepend(str(tmp_path))
    names = []

    def write(body: str) -> str:
        name = f"gw_entry_{next(_COUNTER)}"
        (tmp_path / f"{name}.py").write_text(_HEADER + textwrap.dedent(body))
        names.append(name)
        return name

    yield write
    for name in names:
        sys.modules.pop(name, None)


def test_a_model(write_module):
    name = write_module(
        """
        def build(width=4):
            return nn.Linear(2, width)
        """
    )
    result = load_entry_point(f"{name}:build", width=7)
    assert isinstance(result, EntryPoint)
    assert isinstance(result.model, nn.Linear)
    assert result.model.out_features == 7
    assert result.data is None


def test_train_and_test_datasets(write_module):
    name = write_module(
        """
        def build():
            return Dataset(*pair(30)), Dataset(*pair(9, offset=100))
        """
    )
    data = load_entry_point(f"{name}:build").data
    assert isinstance(data, DataSplits)
    assert (len(data.train), len(data.test)) == (30, 9)
    assert data.validation is None
    assert data.num_classes == 3
    assert data.task == "classification"
    assert data.input_shape == (2,)
    assert data.name == f"{name}:build"
    assert f"entry point {name}:build" in data.description
    assert float(data.test.inputs[0, 0]) == 100.0


def test_train_validation_test_of_numpy_pairs(write_module):
    name = write_module(
        """
        def build():
            x, y = pair(20, classes=4)
            return (x.numpy(), y.numpy()), (x[:5].numpy(), y[:5].numpy()), None
        """
    )
    data = load_entry_point(f"{name}:build").data
    assert (len(data.train), len(data.validation)) == (20, 5)
    assert data.test is None
    assert data.num_classes == 4
    assert data.train.inputs.dtype == torch.float32
    assert data.train.targets.dtype == torch.int64


def test_tensor_datasets_and_regression(write_module):
    name = write_module(
        """
        def build():
            x = torch.linspace(0, 1, 10).reshape(10, 1)
            return TensorDataset(x, 2 * x), TensorDataset(x[:3], 2 * x[:3])
        """
    )
    data = load_entry_point(f"{name}:build").data
    assert data.task == "regression"
    assert data.num_classes is None
    assert data.output_size == 1
    torch.testing.assert_close(data.train.targets, 2 * data.train.inputs)


def test_a_single_pair_is_the_training_data(write_module):
    name = write_module(
        """
        def build():
            return pair(12)
        """
    )
    data = load_entry_point(f"{name}:build").data
    assert len(data.train) == 12
    assert data.validation is None
    assert data.test is None


def test_a_data_splits_passes_through(write_module):
    name = write_module(
        """
        def build():
            return DataSplits.from_datasets(Dataset(*pair(6)), name="mine")
        """
    )
    data = load_entry_point(f"{name}:build").data
    assert data.name == "mine"
    assert len(data.train) == 6


def test_a_dict_with_model_and_data(write_module):
    name = write_module(
        """
        class Factory:
            @staticmethod
            def make(hidden):
                model = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, 3))
                return {"model": model, "data": (pair(15), pair(5))}
        """
    )
    result = load_entry_point(f"{name}:Factory.make", hidden=8)
    assert isinstance(result.model, nn.Sequential)
    assert (len(result.data.train), len(result.data.test)) == (15, 5)
    only_model = write_module(
        """
        def build():
            return {"model": nn.Linear(1, 1)}
        """
    )
    assert load_entry_point(f"{only_model}:build").data is None


def test_the_working_directory_is_on_the_path(tmp_path, monkeypatch):
    module_dir = tmp_path / "project"
    module_dir.mkdir()
    (module_dir / "gw_cwd_task.py").write_text(
        "import torch\ndef build():\n    return torch.nn.Linear(3, 1)\n"
    )
    monkeypatch.chdir(module_dir)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(module_dir))])
    try:
        result = load_entry_point("gw_cwd_task:build")
    finally:
        sys.modules.pop("gw_cwd_task", None)
    assert result.model.in_features == 3


def test_a_package_module(tmp_path, monkeypatch):
    package = tmp_path / "gw_pkg_tasks"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "vision.py").write_text(
        "import torch\ndef build():\n    return torch.nn.Linear(5, 2)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        result = load_entry_point("gw_pkg_tasks.vision:build")
    finally:
        sys.modules.pop("gw_pkg_tasks.vision", None)
        sys.modules.pop("gw_pkg_tasks", None)
    assert result.model.in_features == 5


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["no_colon", "a:b:c", "mod:", ":fn", "my-mod:fn", 3])
def test_bad_spec_format(spec):
    with pytest.raises(
        ValueError, match="'spec' parameter of load_entry_point must be 'module:function'"
    ):
        load_entry_point(spec)


def test_file_name_instead_of_module_name_gets_a_hint():
    with pytest.raises(
        ValueError, match=r"Use the module name \(my_task:build\), not the file name"
    ):
        load_entry_point("my_task.py:build")


def test_module_not_found():
    with pytest.raises(
        ValueError,
        match=r"names module 'gw_no_such_module', which was not found in the current directory",
    ):
        load_entry_point("gw_no_such_module:build")


def test_a_missing_dependency_of_the_module_keeps_its_own_error(write_module):
    name = write_module("import gw_missing_dependency\n")
    with pytest.raises(ModuleNotFoundError, match="gw_missing_dependency"):
        load_entry_point(f"{name}:build")


def test_attribute_missing(write_module):
    name = write_module("def build():\n    return None\n")
    with pytest.raises(ValueError, match=rf"names 'biuld', which '{name}' does not define"):
        load_entry_point(f"{name}:biuld")


def test_not_callable(write_module):
    name = write_module("BUILD = 3\n")
    with pytest.raises(TypeError, match="must name a function .* Got a int instead"):
        load_entry_point(f"{name}:BUILD")


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("return 'a string'", r"must return an nn.Module; a DataSplits; .* Got a str instead"),
        ("return None", "Got a NoneType instead"),
        (
            "return pair(4), pair(4), pair(4), pair(4)",
            r"Got a tuple of 4 \(tuple, tuple, tuple, tuple\)",
        ),
        ("return nn.Linear(1, 1), pair(4)", r"Got a tuple of 2 \(Linear, tuple\)"),
        (
            "return {'net': nn.Linear(1, 1)}",
            "must have keys among 'model', 'data'. Got 'net' instead",
        ),
        (
            "return {'model': 'linear'}",
            r"The 'model' returned by entry point .* must be an nn.Module. Got a str",
        ),
        ("return {'data': [1, 2]}", r"The 'data' returned by entry point .* must be a DataSplits"),
        ("return TensorDataset(*pair(4), torch.zeros(4))", "Got a TensorDataset instead"),
    ],
)
def test_unexpected_return_values(write_module, body, match):
    name = write_module(f"def build():\n    {body}\n")
    with pytest.raises(TypeError, match=match):
        load_entry_point(f"{name}:build")


def test_inconsistent_splits_are_caught(write_module):
    name = write_module(
        """
        def build():
            x, y = pair(6)
            return (x, y), (x[:, :1], y)
        """
    )
    with pytest.raises(
        ValueError, match=r"'test' split of DataSplits must have inputs of shape \(2,\)"
    ):
        load_entry_point(f"{name}:build")


def test_non_finite_data_are_refused_naming_the_split(write_module):
    name = write_module(
        """
        def build():
            x, y = pair(6)
            x[4, 1] = float("nan")
            return pair(10), (x, y), None
        """
    )
    with pytest.raises(
        ValueError,
        match=rf"The validation data returned by entry point '{name}:build': Dataset inputs "
        r"must be finite. Got 1 NaN or infinite value instead, the first in sample 4; drop",
    ):
        load_entry_point(f"{name}:build")
