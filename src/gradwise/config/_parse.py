"""Reading a run configuration: files, ``--set`` overrides, and one-line errors."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import difflib
import math
import re
import tomllib
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from gradwise.config._schema import RunConfig

ROOT = "train"
YAML_SUFFIXES = (".yaml", ".yml")
T = TypeVar("T")
# The longest run: its step count (epochs x steps per epoch) becomes a torch int64 in the
# schedules, where 2**63 epochs was an OverflowError traceback. 2**40 (about 1.1e12) steps
# is decades at 1 ms a step. It caps epochs x steps per epoch too (total_steps), known
# once the data is loaded: 2**40 epochs of 2**24 steps each were 2**64.
MAX_RUN_LENGTH = 2**40
# What a value that opens as YAML flow syntax or quoted text is meant as; when it fails to
# parse, it is a mistake (an unclosed bracket or quote), not text.
_FLOW_KINDS = {"[": "list", "{": "mapping", '"': "quoted text", "'": "quoted text"}


#: The path of a config key below the root ``train``, list entries by index:
#: ``("optimizer", "groups", 1, "lr")`` for ``'train.optimizer.groups[1].lr'``.
ConfigKey = tuple[str | int, ...]


class ConfigError(ValueError):
    """A configuration problem, said in one line: where, what was expected, how to fix.

    ``key`` is the path of the key it is about, the most precise one known
    (``("data", "batch_size")``, ``("optimizer", "groups", 1, "lr")``; :func:`key_of`
    turns a path such as ``'train.data.batch_size'`` into it), so that an error in a
    config file can name the file's line whatever its words. None: not about one key.
    """

    def __init__(self, message: str, *, key: ConfigKey | None = None) -> None:
        super().__init__(message)
        self.key = key


def key_of(path: str) -> ConfigKey:
    """The key a config path names: ``'train.optimizer.groups[1].lr'`` ->
    ``("optimizer", "groups", 1, "lr")``; ``'train'`` -> ``()``."""
    names = path.split(".")
    if names[0] != ROOT:
        raise ValueError(f"The 'path' parameter of key_of must start with '{ROOT}'. Got {path!r}.")
    key: list[str | int] = []
    for name in names[1:]:
        base, *indexes = name.split("[")
        key += [base, *(int(index.removesuffix("]")) for index in indexes)]
    return tuple(key)


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``3e-3`` as a string (its floats need a dot); read it as 3e-3.

    A key given twice in one mapping is an error: PyYAML keeps the last one, so the
    first was silently ignored.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # a key may repeat one merged in: that is what a merge is for
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # PyYAML's own error names an unhashable key
            if key in first_lines:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found the key {key!r} a second time (first on line {first_lines[key]}); "
                    "keep one",
                    key_node.start_mark,
                )
            first_lines[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


# The mantissa has a digit: ``.e5`` or ``-e5`` is text (float() refuses it, which was a
# ValueError traceback for a file or a --set value).
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^[-+]?(?:\d[\d_]*(?:\.\d*)?|\.\d+)[eE][-+]?\d+$|^[-+]?\d[\d_]*\.\d*$|^[-+]?\.\d+$"
    ),
    list("-+0123456789."),
)


def parse_value(text: str) -> Any:
    """A command-line value as YAML would read it: ``3e-3`` -> 0.003, ``null`` -> None."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except (yaml.YAMLError, RecursionError):
        return text


def read_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML (.yaml, .yml) or TOML (.toml) file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(
            f"{path} is a folder, not a config file; give a .yaml, .yml or .toml file "
            "(run 'gradwise config' for a start)"
        )
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; run 'gradwise config' for a start")
    try:
        # utf-8-sig: a byte order mark (Notepad's) is not text; tomllib refused it as an
        # "Invalid statement" on line 1.
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte 0x{error.object[error.start]:02x} "
            f"at offset {error.start}); save it as UTF-8"
        ) from None
    suffix = path.suffix.lower()  # run.YAML is a YAML file too
    try:
        if suffix == ".toml":
            content: Any = tomllib.loads(text)
        elif suffix in YAML_SUFFIXES:
            content = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader
        else:
            raise ConfigError(f"config file {path} must end in .yaml, .yml or .toml")
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(
            f"config file {path} is not valid {suffix[1:]}: {_syntax_error(error)}"
        ) from None
    except RecursionError:  # both parsers recurse per level of brackets or indentation
        raise ConfigError(
            f"config file {path} nests lists or mappings too deeply to read; "
            "a run config needs a few levels"
        ) from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of sections, not a list or value"
        )
    return content


def _syntax_error(error: Exception) -> str:
    """A parser's error in one line, with its 1-based line and column where it has them.

    PyYAML's message spans several lines (its context, then the problem, each with a
    code excerpt); this keeps the words and the position: ``while parsing a flow mapping
    (line 1, column 7): expected ',' or '}', but got '<stream end>' (line 1, column 24)``.
    """
    if isinstance(error, yaml.MarkedYAMLError):
        parts = []
        for text, mark in (
            (error.context, error.context_mark),
            (error.problem, error.problem_mark),
        ):
            if text is None and mark is None:
                continue
            where = f"(line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            parts.append(" ".join(part for part in (text, where) if part))
        if parts:
            return ": ".join(parts)
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return " ".join(lines) if lines else type(error).__name__


def apply_overrides(content: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (``--set optimizer.lr=3e-3``) to a nested mapping.

    A number in the path indexes a list that exists, in ``content`` or in the defaults
    (``data.preprocess.0=minmax``, ``optimizer.groups.1.lr=0.01``); a list is not
    extended: set the whole list for that (``data.preprocess=[standardize, pca]``).
    """
    defaults = config_to_dict(RunConfig())  # where a list is only in the defaults
    for override in overrides:
        key_path, separator, text = override.partition("=")
        if not separator or not key_path.strip():
            raise ConfigError(
                f"override {override!r} must read KEY.PATH=VALUE, e.g. optimizer.lr=3e-3"
            )
        keys = key_path.strip().split(".")
        if not all(key.strip() for key in keys):
            raise ConfigError(
                f"override {override!r} has an empty name in its key path "
                f"{key_path.strip()!r}; name every key between the dots, e.g. optimizer.lr=3e-3"
            )
        node, key = _parent_of(content, defaults, keys, override)
        node[key] = _parse_override_value(override, text)
    return content


def _parent_of(
    content: dict[str, Any], defaults: Mapping[str, Any], keys: Sequence[str], override: str
) -> tuple[Any, Any]:
    """The mapping or list that the last of ``keys`` names an entry of, made where a
    section is missing, and that entry's key or index."""
    node: Any = content
    default: Any = defaults  # the default at the same path, while there is one
    where = ROOT
    for name in keys[:-1]:
        key, default, where = _entry(node, name, default, where, override)
        child = node[key] if isinstance(node, list) else node.get(key)
        if child is None and isinstance(node, dict):
            # A list only in the defaults (data.preprocess): its entry is set in a copy.
            child = node[key] = copy.deepcopy(default) if isinstance(default, list) else {}
        if isinstance(child, dict) and isinstance(default, dict) and _replaces(default, child):
            default = None  # the section names something else: the defaults do not apply
        if not isinstance(child, dict | list):
            raise ConfigError(f"override {override!r}: '{where}' is a value, not a section")
        node = child
    key, _, _ = _entry(node, keys[-1], default, where, override)
    return node, key


def _entry(node: Any, name: str, default: Any, where: str, override: str) -> tuple[Any, Any, str]:
    """The key (or list index) ``name`` names in ``node``, the default at its path (None
    where there is none) and the path, ``'train.data.preprocess[0]'``."""
    if isinstance(node, list):
        index = _list_index(node, name, where, override)
        return index, None, f"{where}[{index}]"
    default = default.get(name) if isinstance(default, dict) else None
    return name, default, f"{where}.{name}"


def _is_index(name: str) -> bool:
    return name.isascii() and name.isdigit()


def _list_index(node: list[Any], name: str, where: str, override: str) -> int:
    """The entry of the list at ``where`` that ``name`` (from the key path) numbers."""
    whole = f"set the whole list instead ({where.removeprefix(ROOT + '.')}=[...])"
    if not node:
        raise ConfigError(
            f"override {override!r}: '{where}' is an empty list, with no entry {name!r}; {whole}"
        )
    count = f"{len(node)} entr{'y' if len(node) == 1 else 'ies'}"
    if not _is_index(name):
        raise ConfigError(
            f"override {override!r}: '{where}' is a list of {count}; name an entry by its "
            f"index, 0 to {len(node) - 1}, not {name!r}, or {whole}"
        )
    index = int(name)
    if index >= len(node):
        raise ConfigError(
            f"override {override!r}: '{where}' has {count}, so an index must be 0 to "
            f"{len(node) - 1}. Got {index}; to add entries, {whole}"
        )
    return index


def _parse_override_value(override: str, text: str) -> Any:
    """``parse_value``, except that a value that opens a YAML list, mapping or quoted text
    and does not parse is an error: kept as text, ``[flip, crop`` would reach the schema
    as a string, and ``"yes`` would name a run folder ``"yes``."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except RecursionError:
        raise ConfigError(
            f"override {override[:40]!r}... nests lists or mappings too deeply to read"
        ) from None
    except yaml.YAMLError as error:
        kind = _FLOW_KINDS.get(text.strip()[:1])
        if kind is None:
            return text
        raise ConfigError(
            f"override {override!r} does not hold a valid YAML {kind}: {_syntax_error(error)}. "
            "Fix the brackets or quotes, or quote the whole value to pass it as text."
        ) from None


def parse_config(content: Mapping[str, Any]) -> RunConfig:
    """Check a mapping against the schema and return the typed configuration.

    The mapping is laid over the defaults key by key, so ``{"optimizer": {"lr": 0.01}}``
    keeps the default optimizer's other arguments; a mapping that names something else
    (``{"optimizer": {"name": "SGD", ...}}``, a ``chain``, another model or schedule)
    replaces the default one instead of mixing with its arguments.
    """
    if not isinstance(content, Mapping):
        raise ConfigError(f"'{ROOT}' must be a mapping of sections. Got {content!r} instead.")
    _check_keys_are_strings(content, RunConfig, ROOT)
    merged = _laid_over(config_to_dict(RunConfig()), content)
    config = parse_section(RunConfig, merged, ROOT)
    if config.epochs is None and config.steps is None:
        raise ConfigError(
            f"one of 'epochs' or 'steps' in '{ROOT}' must be set, but both are null; "
            f"set epochs (e.g. 20) or steps (e.g. 1000) to an int >= 1"
        )
    for name in ("epochs", "steps"):
        length = getattr(config, name)
        if length is not None and length > MAX_RUN_LENGTH:
            raise ConfigError(
                f"The '{name}' key in '{ROOT}' must be an int <= {MAX_RUN_LENGTH} (2**40). "
                f"Got {length} instead.",
                key=(name,),
            )
    _check_finite_lr(config.optimizer, f"{ROOT}.optimizer", ("optimizer",))
    return config


def total_steps(config: RunConfig, steps_per_epoch: int) -> int:
    """The run's optimizer steps: ``steps``, else ``epochs`` x ``steps_per_epoch``.

    :func:`parse_config` caps ``epochs`` and ``steps`` at :data:`MAX_RUN_LENGTH` each;
    steps per epoch are known only once the data is loaded, so their product with
    ``epochs`` is checked here, against the same cap: a run of more steps failed in the
    schedules, far from the setting that made it so long.

    Raises:
        ConfigError: epochs x steps per epoch is more than :data:`MAX_RUN_LENGTH`, about
            ``epochs`` (``key=("epochs",)``).

    Example:
        >>> from gradwise.config import load_config, total_steps
        >>> total_steps(load_config(overrides=["epochs=3"]), steps_per_epoch=50)
        150
    """
    if config.steps is not None:
        return config.steps
    if config.epochs is None:  # parse_config refuses both null
        raise ConfigError("one of 'epochs' or 'steps' in 'train' must be set", key=("epochs",))
    steps = config.epochs * steps_per_epoch
    if steps > MAX_RUN_LENGTH:
        raise ConfigError(
            f"The 'epochs' key in '{ROOT}' times the steps per epoch must be at most "
            f"{MAX_RUN_LENGTH} (2**40) optimizer steps. Got {config.epochs} epochs x "
            f"{steps_per_epoch} steps per epoch = {steps} instead. Lower 'train.epochs', "
            "set 'train.steps', or raise 'train.data.batch_size' (fewer steps per epoch).",
            key=("epochs",),
        )
    return steps


def _check_keys_are_strings(content: Mapping[str, Any], kind: type, path: str) -> None:
    """The keys that become names are strings: YAML reads ``1:`` or ``on:`` as an int or
    a bool key, which the run's builders would meet as a traceback (keyword arguments must
    be strings).

    Those keys are the schema's own (sections and their keys) and the first level of the
    free-form mappings whose keys become keyword arguments: a ``MAPPING`` setting
    (``options``, ``compression_options``, ``optimizer``), an entry of a ``LIST`` setting
    (``preprocess``, ``augment``) and an entry of the optimizer's ``chain`` or ``groups``.
    A value inside them (``relabel: {0: 1}`` for a user's loader) reaches its builder as
    given. ``search`` is left to ``gradwise search``, which reads its own section.
    """
    _check_keys(content, path)
    fields = {f.name: f for f in dataclasses.fields(kind)}
    for name, value in content.items():
        field = fields.get(name)
        if field is None or (kind is RunConfig and name == "search"):
            continue  # an unknown key is parse_section's error
        where = f"{path}.{name}"
        if "section" in field.metadata:
            if isinstance(value, Mapping):
                _check_keys_are_strings(value, field.metadata["section"], where)
        elif isinstance(value, Mapping):
            _check_keys(value, where)
            if kind is RunConfig and name == "optimizer":
                for entries in ("chain", "groups"):
                    _check_entries(value.get(entries), f"{where}.{entries}")
        else:
            _check_entries(value, where)


def _check_entries(value: Any, path: str) -> None:
    """The keys of each mapping in a list of named entries (``{name: pca, ...}``)."""
    if isinstance(value, list):
        for index, entry in enumerate(value):
            if isinstance(entry, Mapping):
                _check_keys(entry, f"{path}[{index}]")


def _check_keys(node: Mapping[Any, Any], path: str) -> None:
    for name in node:
        if not isinstance(name, str):
            raise ConfigError(
                f"The keys of '{path}' must be strings. Got {name!r} ({_is_a(name)}) "
                "instead; put the key in quotes if it is meant as a name.",
                key=(*key_of(path), str(name)),
            )


def _is_a(value: Any) -> str:
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _check_finite_lr(node: Any, path: str, key: ConfigKey) -> None:
    """Every ``lr`` in the optimizer (its own, a group's, a chain entry's) is finite.

    The optimizer section is free-form (its arguments are checked when it is built), but
    an infinite ``lr`` passes those checks and only fails at the first step. ``key``:
    the key of ``node``, at ``path`` (built alongside it: a free-form key may hold any
    character).
    """
    if isinstance(node, Mapping):
        lr = node.get("lr")
        if isinstance(lr, float) and not math.isfinite(lr):
            raise ConfigError(
                f"The 'lr' key in '{path}' must be a finite float. Got {lr!r} instead.",
                key=(*key, "lr"),
            )
        for name, value in node.items():
            _check_finite_lr(value, f"{path}.{name}", (*key, str(name)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _check_finite_lr(value, f"{path}[{index}]", (*key, index))


def _laid_over(defaults: Mapping[str, Any], content: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(defaults)
    for key, value in content.items():
        base = defaults.get(key)
        if isinstance(base, dict) and isinstance(value, Mapping) and not _replaces(base, value):
            result[key] = _laid_over(base, value)
        else:
            result[key] = value
    return result


def _replaces(base: Mapping[str, Any], value: Mapping[str, Any]) -> bool:
    renamed = "name" in value and value["name"] != base.get("name")
    return renamed or "chain" in value


def parse_section(kind: type[T], content: Any, path: str) -> T:
    """One section: unknown keys, types and ranges are checked; missing keys take defaults."""
    key = key_of(path)  # ("data",) for 'train.data'
    if not isinstance(content, Mapping):
        raise ConfigError(
            f"'{path}' must be a mapping of keys to values. Got {content!r} instead.", key=key
        )
    fields = {f.name: f for f in dataclasses.fields(kind)}  # type: ignore[arg-type]
    for name in content:
        if name not in fields:
            raise ConfigError(unknown_key_message(str(name), path, fields), key=(*key, str(name)))
    values: dict[str, Any] = {}
    for name, value in content.items():
        metadata = fields[name].metadata
        if "section" in metadata:
            values[name] = _parse_subsection(metadata, value, f"{path}.{name}")
            continue
        constraint = metadata["constraint"]
        if not constraint.is_satisfied_by(value):
            raise ConfigError(
                f"The '{name}' key in '{path}' must be {constraint.description}. "
                f"Got {value!r} instead.",
                key=(*key, name),
            )
        values[name] = value
    return kind(**values)


def _parse_subsection(metadata: Mapping[str, Any], value: Any, path: str) -> Any:
    """A nested section: null is off (optional sections) or the defaults (a bare ``data:``
    in YAML, its keys commented out, reads null); anything else must be a mapping, so that
    ``averaging: false`` is not read as an empty mapping, which switches averaging on."""
    if value is None:
        return None if metadata["optional"] else parse_section(metadata["section"], {}, path)
    if not isinstance(value, Mapping):
        off = ", or null to switch it off" if metadata["optional"] else ""
        raise ConfigError(
            f"'{path}' must be a mapping of keys to values{off}. Got {value!r} instead.",
            key=key_of(path),
        )
    return parse_section(metadata["section"], value, path)


def closest(word: str, valid: Sequence[str]) -> list[str]:
    """The valid word a typo most likely meant: same letters in another case first."""
    same_letters = [candidate for candidate in valid if candidate.lower() == word.lower()]
    return same_letters[:1] or difflib.get_close_matches(word, valid, n=1, cutoff=0.6)


def unknown_key_message(key: str, path: str, valid: Iterable[str]) -> str:
    """``unknown key 'optimiser' in 'train'; did you mean 'optimizer'?``"""
    valid = sorted(valid)
    close = closest(key, valid)
    if close:
        return f"unknown key '{key}' in '{path}'; did you mean '{close[0]}'?"
    return f"unknown key '{key}' in '{path}'; valid keys: {', '.join(valid)}"


def unknown_name_message(kind: str, name: str, path: str, valid: Sequence[str]) -> str:
    """``unknown optimizer 'Adamw' in 'train.optimizer.name'; did you mean 'AdamW'? ...``"""
    close = closest(name, valid)
    hint = f" did you mean '{close[0]}'?" if close else ""
    return f"unknown {kind} '{name}' in '{path}';{hint} valid names: {', '.join(valid)}"


def config_to_dict(config: Any) -> dict[str, Any]:
    """The configuration as plain data (for YAML, JSON and the run folder)."""
    return dataclasses.asdict(config)


def dump_config(config: Any) -> str:
    """The configuration as YAML, sections in schema order."""
    return yaml.safe_dump(config_to_dict(config), sort_keys=False, default_flow_style=False)


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> RunConfig:
    """The default configuration, updated by a file (if given), then by overrides.

    An error about a key the file gives (and no override replaces) names the file, and for
    YAML the key's line: ``config file run.yaml, line 2: unknown key 'optimiser' ...``.
    """
    overrides = list(overrides)
    content = read_file(path) if path is not None else {}
    try:
        return parse_config(apply_overrides(copy.deepcopy(content), overrides))
    except ConfigError as error:
        hint = _quoting_hint(error, overrides)
        if hint is not None:
            raise ConfigError(f"{str(error).removesuffix('.')}: {hint}", key=error.key) from None
        if path is None:
            raise
        located = _located(error, Path(path), content, overrides, [error.key])
        if located is error:
            raise
        raise located from None


def locate_in_file(
    error: ConfigError, path: str | Path, overrides: Iterable[str] = ()
) -> ConfigError:
    """``error`` naming the config file and line of the key it is about, where it can.

    For an error found building the run from a config that :func:`load_config` read
    (an unknown optimizer, a bad argument): located by its ``key``, whatever its words,
    at the first of the key and the keys holding it that the file gives: an error about
    ``("optimizer", "lr")`` at the optimizer's ``lr:``, or at its ``optimizer:`` where the
    file leaves lr to its default. An error already located, one about a key that an
    override sets, and one about a key the file does not give are returned unchanged.

    An error with no key, raised outside the run's builders (the averaging, prune and
    distributed sections' own checks), is located by the ``'train...'`` path its words
    quote first (:func:`_keys_named`) until those carry their keys too.
    """
    message = str(error)
    if message.startswith("config file "):
        return error
    path = Path(path)
    try:
        content = read_file(path)
    except (ConfigError, OSError):  # changed since load_config read it: say it as is
        return error
    if error.key is None:
        keys = _keys_named(message)
    else:  # the key, then the keys holding it: ("optimizer", "lr"), ("optimizer",)
        keys = [error.key[:length] for length in range(len(error.key), 0, -1)]
    return _located(error, path, content, list(overrides), keys)


def _keys_named(message: str) -> list[ConfigKey]:
    """The keys a message without a ``key`` names, the most precise first: where it is
    about one key under the first path it quotes (``unknown key 'mom' in
    'train.optimizer'``), that key; then the path itself (``'train.optimizer'``; up to a
    list index: ``preprocess[0]``)."""
    found = re.search(rf"'{ROOT}((?:\.\w+)+)(\[\d+\])?'", message)
    if found is None:
        return []
    key: ConfigKey = tuple(found[1].split(".")[1:])
    quoted = re.escape(found[0])
    if found[2]:  # a list entry ('train.data.preprocess[0]'): at the list's key
        return [key]
    child = re.search(
        rf"unknown key '(\w+)' in {quoted}|in {quoted}: The '(\w+)' parameter", message
    )
    return [key] if child is None else [(*key, child[1] or child[2]), key]


def _located(
    error: ConfigError,
    path: Path,
    content: Mapping[str, Any],
    overrides: Sequence[str],
    keys: Sequence[ConfigKey | None],
) -> ConfigError:
    """``error`` at the first of ``keys`` (the most precise first) that the file gives;
    unchanged where an override sets it: the file's section does not hold the value."""
    overridden = [_override_key(override) for override in overrides]
    for key in keys:
        if not key or any(key[: len(given)] == given for given in overridden):
            return error
        where = _where_in_file(path, content, key)
        if where is not None:
            return ConfigError(f"{where}: {error}", key=error.key)
    return error


def _override_key(override: str) -> ConfigKey:
    """The key an override sets, list entries by index: ``data.preprocess.0=minmax`` ->
    ``("data", "preprocess", 0)``, as :class:`ConfigError` keys name them."""
    names = override.partition("=")[0].strip().split(".")
    return tuple(int(name) if _is_index(name) else name for name in names)


def _quoting_hint(error: ConfigError, overrides: Sequence[str]) -> str | None:
    """How to pass text that ``--set`` read as a bool, number or date (``name=yes`` is True).

    Only for the override that set the key of ``error`` (the last one for it), and only
    where the key would take the text: quoting does not help ``epochs=yes``.
    """
    if not error.key:
        return None
    given = [o for o in overrides if _override_key(o) == error.key]
    if not given:
        return None
    key_path, _, text = given[-1].partition("=")
    text = text.strip()
    value = parse_value(text)
    # A date too: YAML reads a run named 2024-01-01 as datetime.date(2024, 1, 1).
    if not isinstance(value, bool | int | float | datetime.date):
        return None
    constraint = _constraint_of(error.key)
    if constraint is None or not constraint.is_satisfied_by(text):
        return None
    return (
        f"--set read {text} as YAML's {value!r}. To pass the text, quote it: "
        f"--set {key_path.strip()}='\"{text}\"'"
    )


def _constraint_of(key: ConfigKey) -> Any:
    """The constraint of the setting at ``key`` in the schema; None if it is not a setting."""
    kind: Any = RunConfig
    constraint = None
    for name in key:
        fields = {f.name: f for f in dataclasses.fields(kind)} if kind is not None else {}
        if not isinstance(name, str) or name not in fields:
            return None
        kind = fields[name].metadata.get("section")
        constraint = fields[name].metadata.get("constraint")
    return constraint


def _where_in_file(path: Path, content: Mapping[str, Any], key: ConfigKey) -> str | None:
    """``config file PATH, line N`` for ``key``; None if the file does not give it."""
    node: Any = content
    for name in key:
        if isinstance(name, int):  # a list's entry
            if not isinstance(node, list) or not 0 <= name < len(node):
                return None
            node = node[name]
            continue
        found = [v for k, v in node.items() if str(k) == name] if isinstance(node, Mapping) else []
        if not found:
            return None
        node = found[0]
    line = _yaml_line(path, key) if path.suffix.lower() in YAML_SUFFIXES else None
    return f"config file {path}" if line is None else f"config file {path}, line {line}"


def _yaml_line(path: Path, key: ConfigKey) -> int | None:
    """The line of ``key`` in a YAML file (1-based); None where a merge or alias hides it."""
    node = yaml.compose(path.read_text(encoding="utf-8"), Loader=_Loader)
    line = None
    for name in key:
        if isinstance(name, int):  # a list's entry: where it starts
            if not isinstance(node, yaml.SequenceNode) or not 0 <= name < len(node.value):
                return None
            node = node.value[name]
            line = node.start_mark.line + 1
            continue
        if not isinstance(node, yaml.MappingNode):
            return None
        pairs = [
            (k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == name
        ]
        if not pairs:
            return None
        key_node, node = pairs[0]
        line = key_node.start_mark.line + 1
    return line
