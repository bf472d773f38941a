"""Errors found building a run from its config carry the key they are about, and the
config file's line is found by that key, not by the error's words."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradwise.config import ConfigError, load_config, locate_in_file
from gradwise.train import prepare_run

# After each case's own lines, so that the line numbers below count from the case's top.
_REST = {
    "epochs": "epochs: 1\n",
    "data": "data:\n  dataset: spirals\n  batch_size: 16\n",
    "model": "model:\n  name: mlp\n  width: 8\n  depth: 1\n",
}


def _build_error(tmp_path: Path, text: str) -> tuple[Path, ConfigError]:
    """The ConfigError that building the run of ``text`` (a YAML file) raises, and the file."""
    path = tmp_path / "run.yaml"
    rest = [part for section, part in _REST.items() if f"{section}:" not in text]
    path.write_text(text + "".join(rest))
    config = load_config(path)  # the file itself is valid: the errors are the builders'
    with pytest.raises(ConfigError) as error:
        prepare_run(config)
    return path, error.value


_CASES = {
    "unknown optimizer": ("optimizer:\n  name: Adamw\n", ("optimizer", "name"), 2),
    "bad optimizer argument": ("optimizer:\n  name: SGD\n  lr: -1\n", ("optimizer", "lr"), 3),
    "unknown optimizer key": (
        "optimizer:\n  name: SGD\n  lr: 0.1\n  mom: 3\n", ("optimizer", "mom"), 4,
    ),
    "two groups claim a parameter": (
        "optimizer:\n  name: SGD\n  lr: 0.1\n  groups:\n    - params: ['1.*']\n"
        "    - params: ['1.weight']\n",
        ("optimizer", "groups", 1, "params"), 6,
    ),
    "a group matches nothing": (
        "optimizer:\n  name: SGD\n  lr: 0.1\n  groups:\n    - params: ['nope.*']\n",
        ("optimizer", "groups", 0, "params"), 5,
    ),
    "chain without the lr last": (
        "optimizer:\n  chain:\n    - scale_by_adam\n    - scale_by_sign\n",
        ("optimizer", "chain", 1), 4,
    ),
    "unknown scheduler": ("schedule:\n  warmup: 0\n  name: cosin\n", ("schedule", "name"), 3),
    "missing schedule option": ("schedule:\n  name: step\n", ("schedule", "options"), 1),
    "schedule option from the optimizer": (
        "schedule:\n  name: step\n  options:\n    step_size: 3\n    initial: 0.1\n",
        ("schedule", "options", "initial"), 5,
    ),
    "unknown model": ("model:\n  name: resnet\n", ("model", "name"), 2),
    "bad model option": (
        "model:\n  name: mlp\n  norm: group\n  options:\n    num_groups: 0\n",
        ("model", "options", "num_groups"), 5,
    ),
    "unknown dataset": ("data:\n  dataset: spiralz\n", ("data", "dataset"), 2),
    "bad data option": (
        "data:\n  dataset: spirals\n  options:\n    noise: -1\n", ("data", "options", "noise"), 4,
    ),
    "bad preprocessing argument": (
        "data:\n  dataset: spirals\n  preprocess:\n    - standardize\n    - name: pca\n"
        "      n_components: -1\n",
        ("data", "preprocess", 1, "n_components"), 6,
    ),
    "preprocessing that does not fit the data": (
        "data:\n  dataset: spirals\n  preprocess:\n    - standardize\n    - name: pca\n"
        "      n_components: 5\n",
        ("data", "preprocess", 1), 5,
    ),
    "unknown augmentation": (
        "data:\n  dataset: spirals\n  augment:\n    - name: flipp\n", ("data", "augment", 0, "name"), 4,
    ),
    "unknown initializer": ("init:\n  weights: kaiming\n", ("init", "weights"), 2),
    "warm start without a source": (
        "warm_start:\n  freeze: ['1.*']\n", ("warm_start", "source"), 1,
    ),
    "unrecorded monitor": ("checkpoint:\n  monitor: val_acc\n", ("checkpoint", "monitor"), 2),
    "unknown compression": ("distributed:\n  compression: zip\n", ("distributed", "compression"), 2),
    "averaging's own check": (
        "averaging:\n  method: ema\n  cycle_steps: 3\n", ("averaging",), 1,
    ),
    "prune's own check": ("prune:\n  ticket: nope.pt\n", ("prune", "ticket"), 2),
    # 2**40 epochs pass parse_config's cap; times the steps per epoch they are too many.
    "epochs times steps per epoch": (f"epochs: {2**40}\n", ("epochs",), 1),
}  # fmt: skip


@pytest.mark.parametrize(("text", "key", "line"), list(_CASES.values()), ids=list(_CASES))
def test_an_error_building_the_run_carries_its_key_and_names_its_line(
    tmp_path: Path, text: str, key: tuple[str | int, ...], line: int
) -> None:
    path, error = _build_error(tmp_path, text)
    assert error.key == key
    assert str(locate_in_file(error, path)) == f"config file {path}, line {line}: {error}"


@pytest.mark.parametrize(("text", "key", "line"), list(_CASES.values()), ids=list(_CASES))
def test_the_line_does_not_depend_on_the_words(
    tmp_path: Path, text: str, key: tuple[str | int, ...], line: int
) -> None:
    # The location was read back from the message: rewording one lost it.
    path, error = _build_error(tmp_path, text)
    reworded = ConfigError("this message quotes no key at all", key=error.key)
    assert str(locate_in_file(reworded, path)) == (
        f"config file {path}, line {line}: this message quotes no key at all"
    )


@pytest.mark.parametrize(
    ("text", "line"),
    [
        # The message quotes the value, which reads like another key: it blamed optimizer.
        ("optimizer:\n  name: SGD\n  lr: 0.1\nmodel:\n  name: train.optimizer\n", 5),
        # It quotes the setting that asks for a number first, then the one at fault.
        ("distributed:\n  reference_batch_size: 8\noptimizer:\n  name: SGD\n  lr: fast\n", 5),
        # Two entries of one list: the second one claims the parameter again.
        ("optimizer:\n  name: SGD\n  lr: 0.1\n  groups:\n    - params: ['1.*']\n"
         "    - params: ['1.weight']\n", 6),
        # The argument of a model option, after words between the path and the argument.
        ("model:\n  name: mlp\n  norm: group\n  options:\n    num_groups: 0\n", 5),
    ],
)  # fmt: skip
def test_a_message_quoting_other_keys_is_located_at_its_own(
    tmp_path: Path, text: str, line: int
) -> None:
    path, error = _build_error(tmp_path, text)
    assert str(locate_in_file(error, path)).startswith(f"config file {path}, line {line}: ")


def test_an_error_about_a_key_an_override_sets_names_no_line(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("optimizer:\n  name: SGD\n  lr: 0.1\n" + "".join(_REST.values()))
    with pytest.raises(ConfigError) as error:
        prepare_run(load_config(path, ["optimizer.lr=-1"]))
    assert error.value.key == ("optimizer", "lr")
    assert locate_in_file(error.value, path, ["optimizer.lr=-1"]) is error.value
