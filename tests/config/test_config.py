"""The run config: defaults, files, overrides, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradwise.config import (
    ConfigError,
    RunConfig,
    config_to_dict,
    dump_config,
    load_config,
    locate_in_file,
    parse_config,
    parse_value,
    total_steps,
)


def test_no_file_and_no_overrides_is_the_default_run() -> None:
    assert load_config() == RunConfig()


def test_the_dumped_config_reads_back_unchanged(tmp_path: Path) -> None:
    config = load_config(overrides=["optimizer.lr=0.02", "data.augment=[flip]", "schedule=null"])
    path = tmp_path / "run.yaml"
    path.write_text(dump_config(config))
    assert load_config(path) == config


def test_yaml_and_toml_files_give_the_same_config(tmp_path: Path) -> None:
    (tmp_path / "run.yaml").write_text(
        "epochs: 3\noptimizer:\n  lr: 3e-3\ndata:\n  batch_size: 32\n"
    )
    (tmp_path / "run.toml").write_text(
        "epochs = 3\n[optimizer]\nlr = 3e-3\n[data]\nbatch_size = 32\n"
    )
    from_yaml, from_toml = load_config(tmp_path / "run.yaml"), load_config(tmp_path / "run.toml")
    assert from_yaml == from_toml
    assert from_yaml.optimizer["lr"] == 0.003  # YAML 1.1 alone would read the string "3e-3"


@pytest.mark.parametrize(
    ("text", "value"),
    [("3e-3", 0.003), ("1E5", 1e5), ("0.5", 0.5), ("10", 10), ("null", None), ("true", True),
     ("[flip, crop]", ["flip", "crop"]), ("{patience: 3}", {"patience": 3}), ("adam", "adam")],
)  # fmt: skip
def test_override_values_read_as_yaml(text: str, value: object) -> None:
    assert parse_value(text) == value


def test_a_partial_section_keeps_the_other_defaults() -> None:
    config = load_config(overrides=["optimizer.lr=0.01", "data.batch_size=64"])
    assert config.optimizer == {"name": "AdamW", "lr": 0.01, "weight_decay": 0.05}
    assert config.data.batch_size == 64
    assert config.data.dataset == "mnist1d"


def test_naming_another_optimizer_replaces_the_default_arguments() -> None:
    config = load_config(overrides=["optimizer.name=SGD", "optimizer.lr=0.1"])
    assert config.optimizer == {"name": "SGD", "lr": 0.1}
    chain = parse_config({"optimizer": {"chain": ["scale_by_adam", "scale_by_learning_rate"]}})
    assert chain.optimizer == {"chain": ["scale_by_adam", "scale_by_learning_rate"]}


def test_early_stopping_section_switches_on_with_its_defaults() -> None:
    config = load_config(overrides=["regularization.early_stopping={patience: 3}"])
    assert config.regularization.early_stopping is not None
    assert config.regularization.early_stopping.patience == 3
    assert config.regularization.early_stopping.monitor == "val_loss"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"optimiser": {}}, "unknown key 'optimiser' in 'train'; did you mean 'optimizer'?"),
        ({"data": {"batchsize": 3}}, "unknown key 'batchsize' in 'train.data'; did you mean 'batch_size'?"),
        ({"data": {"batch_size": 0}}, "The 'batch_size' key in 'train.data' must be an int >= 1. Got 0 instead."),
        ({"data": {"batch_size": 2.5}}, "The 'batch_size' key in 'train.data' must be an int >= 1. Got 2.5 instead."),
        ({"epochs": "ten"}, "The 'epochs' key in 'train' must be an int >= 1 or null. Got 'ten' instead."),
        ({"device": "tpu"}, "The 'device' key in 'train' must be one of 'cpu', 'cuda', 'auto'. Got 'tpu' instead."),
        ({"model": {"dropout": 1.0}}, "The 'dropout' key in 'train.model' must be a float in [0, 1). Got 1.0 instead."),
        ({"data": "mnist1d"}, "'train.data' must be a mapping of keys to values. Got 'mnist1d' instead."),
        ({"zzz": 1}, "unknown key 'zzz' in 'train'; valid keys: averaging, checkpoint, clip_grad_norm, data, device,"),
        ({"regularization": {"early_stopping": {"patiense": 2}}},
         "unknown key 'patiense' in 'train.regularization.early_stopping'; did you mean 'patience'?"),
    ],
)  # fmt: skip
def test_errors_say_where_what_and_the_closest_key(
    content: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(content)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_bad_files_and_overrides_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"must end in \.yaml, \.yml or \.toml"):
        load_config(tmp_path / "run.json")
    (tmp_path / "broken.yaml").write_text("data: [1, 2\n")
    with pytest.raises(ConfigError, match="is not valid yaml"):
        load_config(tmp_path / "broken.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="must read KEY.PATH=VALUE"):
        load_config(overrides=["optimizer.lr"])
    with pytest.raises(ConfigError, match="The 'epochs' key in 'train' must be an int >= 1"):
        load_config(overrides=["epochs.max=3"])
    with pytest.raises(ConfigError, match="'train.epochs' is a value, not a section"):
        load_config(overrides=["epochs=3", "epochs.max=3"])


def test_config_to_dict_is_plain_data() -> None:
    content = config_to_dict(RunConfig())
    assert content["optimizer"]["name"] == "AdamW"
    assert content["regularization"]["early_stopping"] is None


def test_a_yaml_syntax_error_keeps_its_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("data: {dataset: spirals")
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path / "bad.yaml")
    message = str(error.value)
    assert message == (
        f"config file {tmp_path / 'bad.yaml'} is not valid yaml: while parsing a flow mapping "
        "(line 1, column 7): expected ',' or '}', but got '<stream end>' (line 1, column 24)"
    )
    (tmp_path / "nested.yaml").write_text("epochs: 3\ndata:\n  batch_size: 32\n   dataset: x\n")
    with pytest.raises(ConfigError, match=r"not valid yaml: .*\(line 4, column 11\)") as error:
        load_config(tmp_path / "nested.yaml")
    assert "\n" not in str(error.value)


def test_a_config_file_that_is_not_utf8_is_a_one_line_error(tmp_path: Path) -> None:
    for name in ("run.yaml", "run.toml"):
        (tmp_path / name).write_bytes(b"\xff\xfe")
        with pytest.raises(ConfigError) as error:
            load_config(tmp_path / name)
        assert str(error.value) == (
            f"config file {tmp_path / name} is not UTF-8 text (byte 0xff at offset 0); "
            "save it as UTF-8"
        )


def test_epochs_and_steps_cannot_both_be_null() -> None:
    message = "one of 'epochs' or 'steps' in 'train' must be set, but both are null"
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=["epochs=null"])
    with pytest.raises(ConfigError, match=message):
        parse_config({"epochs": None, "steps": None})
    assert parse_config({"epochs": None, "steps": 100}).steps == 100
    assert parse_config({"epochs": 3, "steps": None}).epochs == 3


def test_the_train_command_refuses_null_epochs_and_steps_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gradwise.cli import main

    runs = tmp_path / "runs"
    argv = ["train", "--set", "epochs=null", "--set", "steps=null", "--no-progress"]
    assert main([*argv, "--runs-dir", str(runs)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "one of 'epochs' or 'steps' in 'train' must be set" in error
    assert not runs.exists()


@pytest.mark.parametrize("name", ["a/b", "../x", "..", ".", "", "/abs"])
def test_a_run_name_is_a_single_folder_name(name: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"name": name})
    assert str(error.value) == (
        "The 'name' key in 'train' must be a single folder name (not empty, '.' or '..'; "
        f"no '/') or null. Got {name!r} instead."
    )


def test_a_run_name_override_is_checked_and_a_plain_one_kept() -> None:
    with pytest.raises(ConfigError, match="must be a single folder name"):
        load_config(overrides=["name=../x"])
    assert load_config(overrides=["name=my-run.v2"]).name == "my-run.v2"
    assert load_config(overrides=["name=null"]).name is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("regularization.l2=.inf", "The 'l2' key in 'train.regularization' must be a finite float >= 0. Got inf instead."),
        ("regularization.l1=.inf", "The 'l1' key in 'train.regularization' must be a finite float >= 0. Got inf instead."),
        ("regularization.max_norm=.inf",
         "The 'max_norm' key in 'train.regularization' must be a finite float > 0 or null. Got inf instead."),
        ("schedule.warmup=.inf", "The 'warmup' key in 'train.schedule' must be a finite float >= 0. Got inf instead."),
        ("init.biases=-.inf", "The 'biases' key in 'train.init' must be a finite float. Got -inf instead."),
        ("optimizer.lr=.inf", "The 'lr' key in 'train.optimizer' must be a finite float. Got inf instead."),
        ("optimizer.lr=.nan", "The 'lr' key in 'train.optimizer' must be a finite float. Got nan instead."),
        ("optimizer.groups=[{params: ['0.*'], lr: .inf}]",
         "The 'lr' key in 'train.optimizer.groups[0]' must be a finite float. Got inf instead."),
    ],
)  # fmt: skip
def test_infinite_strengths_and_learning_rates_are_refused(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(overrides=[override])
    assert str(error.value) == message


def test_finite_strengths_and_learning_rates_still_pass() -> None:
    config = load_config(
        overrides=["regularization.l2=1e-4", "regularization.max_norm=3", "optimizer.lr=1"]
    )
    assert config.regularization.l2 == 1e-4
    assert config.regularization.max_norm == 3
    assert config.optimizer["lr"] == 1


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("averaging=false", "'train.averaging' must be a mapping of keys to values, or null to switch it off. Got False instead."),
        ("regularization.early_stopping=false",
         "'train.regularization.early_stopping' must be a mapping of keys to values, or null to switch it off. Got False instead."),
        ("monitor=false", "'train.monitor' must be a mapping of keys to values, or null to switch it off. Got False instead."),
        ("schedule=0", "'train.schedule' must be a mapping of keys to values, or null to switch it off. Got 0 instead."),
        ("data=false", "'train.data' must be a mapping of keys to values. Got False instead."),
        ("model=[]", "'train.model' must be a mapping of keys to values. Got [] instead."),
    ],
)  # fmt: skip
def test_a_section_set_to_false_or_another_non_mapping_is_refused(
    override: str, message: str
) -> None:
    # 'averaging=false' switched EMA averaging on, 'monitor=false' left monitoring on.
    with pytest.raises(ConfigError) as error:
        load_config(overrides=[override])
    assert str(error.value) == message


def test_a_null_or_empty_section_keeps_its_meaning() -> None:
    config = load_config(overrides=["averaging=null", "data=null", "monitor={}"])
    assert config.averaging is None
    assert config.data == RunConfig().data
    assert config.monitor == RunConfig().monitor


def test_a_key_given_twice_in_a_yaml_file_is_an_error_naming_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("epochs: 3\ndata:\n  batch_size: 32\nepochs: 5\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value) == (
        f"config file {path} is not valid yaml: while constructing a mapping (line 1, column 1): "
        "found the key 'epochs' a second time (first on line 1); keep one (line 4, column 1)"
    )
    path.write_text("data: {batch_size: 32, batch_size: 64}\n")
    with pytest.raises(ConfigError, match=r"the key 'batch_size' a second time .*column 24\)$"):
        load_config(path)


def test_yaml_merge_keys_may_still_repeat_a_merged_key(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(
        "search:\n  base: &base {batch_size: 32, dataset: spirals}\n"
        "data:\n  <<: *base\n  batch_size: 64\n"
    )
    config = load_config(path)
    assert (config.data.batch_size, config.data.dataset) == (64, "spirals")


def _config_error(tmp_path: Path, text: str) -> tuple[Path, str]:
    """The ConfigError that loading ``text`` as a YAML config file raises, and the file."""
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    return path, str(error.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("optimizer:\n  1: 2\n", "The keys of 'train.optimizer' must be strings. Got 1 (an int) instead"),
        ("model:\n  options: {3: 4}\n",
         "The keys of 'train.model.options' must be strings. Got 3 (an int) instead"),
        ("data:\n  preprocess:\n    - {name: pca, true: 1}\n",
         "The keys of 'train.data.preprocess[0]' must be strings. Got True (a bool) instead"),
        ("optimizer:\n  chain:\n    - {name: scale_by_adam, 2: 3}\n",
         "The keys of 'train.optimizer.chain[0]' must be strings. Got 2 (an int) instead"),
        ("optimizer:\n  groups:\n    - {params: ['0.*'], 5: 0.1}\n",
         "The keys of 'train.optimizer.groups[0]' must be strings. Got 5 (an int) instead"),
        ("distributed:\n  compression_options: {on: 2}\n",
         "The keys of 'train.distributed.compression_options' must be strings. Got True (a bool)"),
        ("schedule:\n  1: 2\n", "The keys of 'train.schedule' must be strings. Got 1 (an int)"),
    ],
)  # fmt: skip
def test_a_key_that_is_not_a_string_is_a_one_line_error(
    tmp_path: Path, text: str, message: str
) -> None:
    # These reached the run's builders: an AttributeError or TypeError traceback.
    _, error = _config_error(tmp_path, text)
    assert message in error
    assert error.endswith("instead; put the key in quotes if it is meant as a name.")


def test_a_value_with_int_keys_in_the_loader_options_reaches_the_config_unchanged(
    tmp_path: Path,
) -> None:
    # be46d37 refused it: "The keys of 'train.data.options.relabel' must be strings". Only
    # the keys that become names (here 'relabel', a keyword of the user's own loader) must be.
    path = tmp_path / "run.yaml"
    path.write_text("data:\n  options:\n    relabel: {0: 1, 1: 0}\n")
    assert load_config(path).data.options == {"relabel": {0: 1, 1: 0}}


def test_values_with_int_keys_inside_other_keyword_arguments_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(
        "model: {options: {widths: {1: 64}}}\n"
        "optimizer:\n  chain:\n    - {name: scale_by_adam, table: {2: 3}}\n"
        "    - scale_by_learning_rate\n"
        "distributed: {compression_options: {ranks: {0: 4}}}\n"
        "data: {preprocess: [{name: pca, table: {true: 1}}]}\n"
    )
    config = load_config(path)
    assert config.model.options == {"widths": {1: 64}}
    assert config.optimizer["chain"][0] == {"name": "scale_by_adam", "table": {2: 3}}
    assert config.distributed.compression_options == {"ranks": {0: 4}}
    assert config.data.preprocess == [{"name": "pca", "table": {True: 1}}]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("epochs: 3\noptimiser:\n  lr: 0.1\n",
         "line 2: unknown key 'optimiser' in 'train'; did you mean 'optimizer'?"),
        ("epochs: 3\ndata:\n  dataset: spirals\n  batch_size: 0\n",
         "line 4: The 'batch_size' key in 'train.data' must be an int >= 1. Got 0 instead."),
        ("data: {dataset: spirals}\naveraging: false\n",
         "line 2: 'train.averaging' must be a mapping of keys to values, or null to switch it off."),
    ],
)  # fmt: skip
def test_an_error_in_a_yaml_file_names_the_file_and_line(
    tmp_path: Path, text: str, message: str
) -> None:
    path, error = _config_error(tmp_path, text)
    assert error.startswith(f"config file {path}, {message}")


def test_an_error_in_a_toml_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text("epochs = 3\n[data]\nbach_size = 3\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value) == (
        f"config file {path}: unknown key 'bach_size' in 'train.data'; did you mean 'batch_size'?"
    )


def test_an_error_from_an_override_does_not_blame_the_file(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("data:\n  batch_size: 32\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, ["data.batch_size=0"])
    assert str(error.value) == (
        "The 'batch_size' key in 'train.data' must be an int >= 1. Got 0 instead."
    )
    with pytest.raises(ConfigError) as error:
        load_config(path, ["data={batch_size: 0}"])
    assert not str(error.value).startswith("config file")


@pytest.mark.parametrize("seed", [2**32, 2**64, 10**20])
def test_a_seed_beyond_the_data_seeds_range_is_refused_by_the_config(seed: int) -> None:
    # 10**20 reached torch.manual_seed: 'Overflow when unpacking long long' traceback.
    with pytest.raises(ConfigError) as error:
        load_config(overrides=[f"seed={seed}"])
    assert str(error.value) == (
        f"The 'seed' key in 'train' must be an int in [0, 4294967295]. Got {seed} instead."
    )
    assert load_config(overrides=[f"seed={2**32 - 1}"]).seed == 2**32 - 1


@pytest.mark.parametrize(
    ("override", "got", "hint"),
    [
        ("name=yes", "True", "--set read yes as YAML's True. To pass the text, quote it: --set name='\"yes\"'"),
        ("model.name=1", "1", "--set read 1 as YAML's 1. To pass the text, quote it: --set model.name='\"1\"'"),
        ("data.dataset=off", "False", "--set read off as YAML's False. To pass the text, quote it: --set data.dataset='\"off\"'"),
        ("checkpoint.monitor=1e-3", "0.001",
         "--set read 1e-3 as YAML's 0.001. To pass the text, quote it: --set checkpoint.monitor='\"1e-3\"'"),
        ("name=2024-01-01", "datetime.date(2024, 1, 1)",
         "--set read 2024-01-01 as YAML's datetime.date(2024, 1, 1). To pass the text, quote it: --set name='\"2024-01-01\"'"),
    ],
)  # fmt: skip
def test_a_bool_or_number_set_for_a_text_key_hints_to_quote_it(
    override: str, got: str, hint: str
) -> None:
    # 'gradwise train --set name=yes' said "Got True instead." and nothing more.
    with pytest.raises(ConfigError) as error:
        load_config(overrides=[override])
    message = str(error.value)
    assert f"Got {got} instead: {hint}" in message
    assert message.endswith(hint)
    assert "\n" not in message
    # The quoting the hint gives works.
    key, _, text = override.partition("=")
    config = config_to_dict(load_config(overrides=[f'{key}="{text}"']))
    for name in key.split("."):
        config = config[name]
    assert config == text


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["epochs=yes"], "The 'epochs' key in 'train' must be an int >= 1 or null. Got True instead."),
        (["device=1"], "The 'device' key in 'train' must be one of 'cpu', 'cuda', 'auto'. Got 1 instead."),
        (["name=[1]"], "The 'name' key in 'train' must be a single folder name (not empty, '.' or '..'; no '/') or null. Got [1] instead."),
        (["name=yes", "name=[1]"], "The 'name' key in 'train' must be a single folder name (not empty, '.' or '..'; no '/') or null. Got [1] instead."),
    ],
)  # fmt: skip
def test_no_quoting_hint_where_the_text_would_not_do_either(
    overrides: list[str], message: str
) -> None:
    # An int key, a choice the text would not meet, a list (not a bool or number), and a
    # value that a later override replaced.
    with pytest.raises(ConfigError) as error:
        load_config(overrides=overrides)
    assert str(error.value) == message
    assert load_config(overrides=["name=yes", "name=null"]).name is None


def test_a_quoting_hint_names_the_override_not_the_file(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("name: yes\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(f"config file {path}, line 1: The 'name' key")
    assert "--set" not in str(error.value)


@pytest.mark.parametrize(
    ("override", "kind", "problem"),
    [
        ("data.augment=[flip, crop", "list",
         "while parsing a flow sequence (line 1, column 1): expected ',' or ']', but got '<stream end>' (line 1, column 12)"),
        ("foo=[1,2", "list",
         "while parsing a flow sequence (line 1, column 1): expected ',' or ']', but got '<stream end>' (line 1, column 5)"),
        ("regularization.early_stopping={patience: 3", "mapping",
         "while parsing a flow mapping (line 1, column 1): expected ',' or '}', but got '<stream end>' (line 1, column 13)"),
        ("data.augment=[flip]]", "list", "expected '<document start>', but found ']' (line 1, column 7)"),
        ('name="yes', "quoted text",
         "while scanning a quoted scalar (line 1, column 1): found unexpected end of stream (line 1, column 5)"),
    ],
)  # fmt: skip
def test_a_malformed_flow_value_in_an_override_is_an_error(
    override: str, kind: str, problem: str
) -> None:
    # It was kept as the text '[flip, crop' (a "must be a list. Got '[flip, crop'" error at
    # best; 'name="yes' named the run folder '"yes').
    with pytest.raises(ConfigError) as error:
        load_config(overrides=[override])
    assert str(error.value) == (
        f"override {override!r} does not hold a valid YAML {kind}: {problem}. Fix the "
        "brackets or quotes, or quote the whole value to pass it as text."
    )


def test_text_with_brackets_or_quotes_inside_is_still_text() -> None:
    config = load_config(overrides=["data.dataset=pkg.mod:make[1]", "checkpoint.monitor=it's"])
    assert config.data.dataset == "pkg.mod:make[1]"
    assert config.checkpoint.monitor == "it's"


@pytest.mark.parametrize("suffix", [".YAML", ".Yml", ".TOML"])
def test_a_config_file_suffix_is_read_in_any_case(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"run{suffix}"
    toml = suffix.lower() == ".toml"
    path.write_text(
        "epochs = 3\n[data]\nbach_size = 3\n" if toml else "epochs: 3\ndata:\n  bach_size: 3\n"
    )
    with pytest.raises(ConfigError) as error:
        load_config(path)
    # Read (the typo is found), and a YAML file's error still names the line.
    where = f"config file {path}" if toml else f"config file {path}, line 3"
    assert str(error.value).startswith(f"{where}: unknown key 'bach_size' in 'train.data'")
    path.write_text("epochs = 3\n" if toml else "epochs: 3\n")
    assert load_config(path).epochs == 3
    path.write_text("epochs = [3\n" if toml else "epochs: [3\n")
    with pytest.raises(ConfigError, match=f"is not valid {suffix.lower()[1:]}: "):
        load_config(path)


def test_a_config_path_reads_as_a_key_with_list_indexes() -> None:
    from gradwise.config import key_of

    assert key_of("train.optimizer.groups[1].lr") == ("optimizer", "groups", 1, "lr")
    assert key_of("train.data.preprocess[0]") == ("data", "preprocess", 0)
    assert key_of("train") == ()
    with pytest.raises(ValueError, match="must start with 'train'"):
        key_of("optimizer.lr")


_NESTED = (
    "epochs: 3\n"
    "optimizer:\n"
    "  name: SGD\n"
    "  lr: 0.1\n"
    "  groups:\n"
    "    - params: ['0.*']\n"
    "    - params: ['1.*']\n"
    "      lr: 0.01\n"
)


@pytest.mark.parametrize(
    ("key", "line"),
    [
        (("optimizer", "lr"), 4),
        (("optimizer", "groups", 1), 7),
        (("optimizer", "groups", 1, "lr"), 8),
        # Keys the file leaves to their defaults: at the nearest key holding them it gives.
        (("optimizer", "momentum"), 2),
        (("optimizer", "groups", 0, "lr"), 6),
        (("optimizer", "groups", 5, "lr"), 5),
    ],
)
def test_an_error_is_located_by_its_key_whatever_its_words(
    tmp_path: Path, key: tuple[str | int, ...], line: int
) -> None:
    from gradwise.config import locate_in_file

    path = tmp_path / "run.yaml"
    path.write_text(_NESTED)
    error = ConfigError("unknown key 'zzz' in 'train.data'", key=key)  # words quote another
    assert str(locate_in_file(error, path)) == f"config file {path}, line {line}: {error}"


def test_an_error_located_by_its_key_in_a_toml_file_names_the_file(tmp_path: Path) -> None:
    from gradwise.config import locate_in_file

    path = tmp_path / "run.toml"
    path.write_text("epochs = 3\n[optimizer]\nname = 'SGD'\nlr = 0.1\n")
    error = ConfigError("bad", key=("optimizer", "lr"))
    assert str(locate_in_file(error, path)) == f"config file {path}: bad"
    assert locate_in_file(error, path, ["optimizer.lr=-1"]) is error  # the override's
    missing = ConfigError("bad", key=("data",))
    assert locate_in_file(missing, path) is missing  # a key the file does not give


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("optimizer:\n  name: SGD\n  lr: .inf\n",
         "line 3: The 'lr' key in 'train.optimizer' must be a finite float. Got inf instead."),
        ("data:\n  preprocess:\n    - standardize\n    - {name: pca, 2: 1}\n",
         "line 4: The keys of 'train.data.preprocess[1]' must be strings. Got 2 (an int)"),
    ],
)  # fmt: skip
def test_a_bad_lr_or_a_list_entrys_key_in_a_yaml_file_names_its_line(
    tmp_path: Path, text: str, message: str
) -> None:
    # Neither carried its key, so neither named the file.
    path, error = _config_error(tmp_path, text)
    assert error.startswith(f"config file {path}, {message}")


@pytest.mark.parametrize("text", [".e5", "-e5", "+E3", "-.e3"])
def test_an_exponent_without_digits_before_it_is_text(tmp_path: Path, text: str) -> None:
    # The float resolver matched them and float() refused them: a ValueError traceback.
    assert parse_value(text) == text
    assert load_config(overrides=[f"data.dataset={text}"]).data.dataset == text
    (tmp_path / "run.yaml").write_text(f"data:\n  dataset: {text}\n")
    assert load_config(tmp_path / "run.yaml").data.dataset == text
    assert [parse_value(t) for t in ("1.e5", "1_0e4", "-.5e1")] == [1e5, 1e5, -5.0]


@pytest.mark.parametrize("name", ["run.toml", "run.yaml"])
def test_a_config_file_with_a_byte_order_mark_reads_as_without(tmp_path: Path, name: str) -> None:
    # Notepad's UTF-8 starts with one; tomllib refused it ("Invalid statement", line 1).
    text = "epochs = 3\n" if name.endswith(".toml") else "epochs: 3\n"
    (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert load_config(tmp_path / name).epochs == 3


def test_a_byte_order_mark_and_crlf_keep_the_line_of_an_error(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_bytes(b"\xef\xbb\xbfepochs: 3\r\ndata:\r\n  batchsize: 3\r\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(
        f"config file {path}, line 3: unknown key 'batchsize' in 'train.data'"
    )


@pytest.mark.parametrize(
    ("name", "text"),
    [("run.yaml", "data:\n  options: {x: X}\n"), ("run.toml", "[data.options]\nx = X\n")],
)
def test_a_file_nested_too_deeply_is_a_one_line_error(tmp_path: Path, name: str, text: str) -> None:
    # Both parsers recurse per level: a RecursionError traceback.
    (tmp_path / name).write_text(text.replace("X", "[" * 5000 + "]" * 5000))
    with pytest.raises(ConfigError, match="nests lists or mappings too deeply") as error:
        load_config(tmp_path / name)
    assert str(error.value).startswith(f"config file {tmp_path / name} ")


def test_an_override_nested_too_deeply_is_a_one_line_error() -> None:
    with pytest.raises(ConfigError, match="nests lists or mappings too deeply"):
        load_config(overrides=["data.options={x: " + "[" * 5000 + "]" * 5000 + "}"])


@pytest.mark.parametrize("key", ["epochs", "steps"])
def test_a_run_length_beyond_int64_steps_is_refused(key: str) -> None:
    # 2**63 epochs reached the schedules and failed there: OverflowError, a traceback.
    with pytest.raises(ConfigError) as error:
        load_config(overrides=[f"{key}={2**63}"])
    assert str(error.value) == (
        f"The '{key}' key in 'train' must be an int <= 1099511627776 (2**40). Got {2**63} instead."
    )
    assert error.value.key == (key,)
    assert getattr(load_config(overrides=[f"{key}={2**40}"]), key) == 2**40


def test_a_run_length_beyond_the_limit_in_a_file_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(f"seed: 1\nepochs: {2**63}\n")
    with pytest.raises(ConfigError, match=r"^config file .*, line 2: The 'epochs' key"):
        load_config(path)


@pytest.mark.parametrize("override", ["optimizer..lr=1", "optimizer.=1", ".epochs=3", "data. .x=1"])
def test_an_override_with_an_empty_key_name_is_refused(override: str) -> None:
    # It set a key named '' (train ignores 'search.' ones: search..x=1 passed silently).
    with pytest.raises(ConfigError, match="has an empty name in its key path"):
        load_config(overrides=[override])


def test_a_list_entry_is_set_by_its_index(tmp_path: Path) -> None:
    # "data.preprocess.0" made a mapping {"0": ...}, which the schema refused as not a list.
    assert load_config(overrides=["data.preprocess.0=minmax"]).data.preprocess == ["minmax"]
    path = tmp_path / "run.yaml"
    path.write_text("data:\n  preprocess: [standardize, {name: pca, n_components: 3}]\n")
    config = load_config(path, ["data.preprocess.1.n_components=5", "data.preprocess.0=minmax"])
    assert config.data.preprocess == ["minmax", {"name": "pca", "n_components": 5}]
    assert load_config(path).data.preprocess[1] == {"name": "pca", "n_components": 3}
    config = load_config(overrides=["data.preprocess=[a, b]", "data.preprocess.1=c"])
    assert config.data.preprocess == ["a", "c"]
    assert load_config(overrides=["data.options.0=x"]).data.options == {"0": "x"}  # a mapping


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.preprocess.1=minmax"],
         "override 'data.preprocess.1=minmax': 'train.data.preprocess' has 1 entry, so an "
         "index must be 0 to 0. Got 1; to add entries, set the whole list instead "
         "(data.preprocess=[...])"),
        (["data.preprocess=[a, b, c]", "data.preprocess.7.name=x"],
         "override 'data.preprocess.7.name=x': 'train.data.preprocess' has 3 entries, so an "
         "index must be 0 to 2. Got 7; to add entries, set the whole list instead "
         "(data.preprocess=[...])"),
        (["data.preprocess.first=minmax"],
         "override 'data.preprocess.first=minmax': 'train.data.preprocess' is a list of 1 "
         "entry; name an entry by its index, 0 to 0, not 'first', or set the whole list "
         "instead (data.preprocess=[...])"),
        (["data.augment.0=flip"],
         "override 'data.augment.0=flip': 'train.data.augment' is an empty list, with no "
         "entry '0'; set the whole list instead (data.augment=[...])"),
        (["data.preprocess.0.name=pca"],
         "override 'data.preprocess.0.name=pca': 'train.data.preprocess[0]' is a value, not "
         "a section"),
    ],
)  # fmt: skip
def test_a_list_index_out_of_range_names_the_length(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(overrides=overrides)
    assert str(error.value) == message


def test_an_error_about_a_list_entry_set_by_an_override_does_not_blame_the_file(
    tmp_path: Path,
) -> None:
    # The override's key ("data", "preprocess", "0") did not match the error's, whose
    # list entries are ints: the error was put at the file's line, which it is not about.
    path = tmp_path / "run.yaml"
    path.write_text("seed: 1\ndata:\n  preprocess: [standardize]\n")
    error = ConfigError("unknown preprocessor 'pcaa'", key=("data", "preprocess", 0))
    assert locate_in_file(error, path, ["data.preprocess.0=pcaa"]) is error
    assert str(locate_in_file(error, path)).startswith(f"config file {path}, line 3: ")


def test_epochs_times_steps_per_epoch_is_capped_like_steps() -> None:
    # prepare_run multiplied them unchecked: 2**40 epochs of 2**24 steps reached the
    # schedules as 2**64 steps, an OverflowError traceback.
    config = load_config(overrides=[f"epochs={2**40}"])
    assert total_steps(config, 1) == 2**40
    with pytest.raises(ConfigError) as error:
        total_steps(config, 2**24)
    assert str(error.value) == (
        "The 'epochs' key in 'train' times the steps per epoch must be at most 1099511627776 "
        f"(2**40) optimizer steps. Got {2**40} epochs x {2**24} steps per epoch = {2**64} "
        "instead. Lower 'train.epochs', set 'train.steps', or raise 'train.data.batch_size' "
        "(fewer steps per epoch)."
    )
    assert error.value.key == ("epochs",)
    assert total_steps(load_config(overrides=["epochs=3"]), 50) == 150
    assert total_steps(load_config(overrides=[f"epochs={2**40}", "steps=7"]), 2**24) == 7
