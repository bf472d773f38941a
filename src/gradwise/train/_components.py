"""Named components a configuration can ask for: preprocessing, augmentation, optimizers,
schedules. Each builder turns a config entry into the library object, and turns a bad
entry into a one-line :class:`ConfigError` with the entry's path.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from fnmatch import fnmatchcase
from functools import partial
from typing import Any

import torch
from torch import nn

from gradwise import optim, preprocess, regularize, schedules
from gradwise.config import (
    ConfigError,
    ConfigKey,
    DataConfig,
    key_of,
    unknown_key_message,
    unknown_name_message,
)
from gradwise.distributed._one_bit_adam import OneBitAdam
from gradwise.train._warm_start import quote_names

PREPROCESSORS: dict[str, Callable[..., preprocess.Preprocessor]] = {
    "rescale": preprocess.Rescale,
    "mean_subtract": preprocess.MeanSubtract,
    "standardize": preprocess.Standardize,
    "min_max_scale": preprocess.MinMaxScale,
    "pca": preprocess.PCA,
    "pca_whiten": preprocess.PCAWhiten,
    "zca_whiten": preprocess.ZCAWhiten,
}

AUGMENTATIONS: dict[str, Callable[..., nn.Module]] = {
    "flip": regularize.RandomHorizontalFlip,
    "shift": regularize.RandomShift,
    "crop": regularize.RandomCrop,
    "rotation": regularize.RandomRotation,
    "noise": regularize.GaussianNoise,
    "mixup": regularize.Mixup,
}

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    name: getattr(optim, name)
    for name in (
        "SGD", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW", "NAdam", "RAdam",
        "LARS", "LAMB", "SWATS", "SignSGD", "OneBitSGD",
    )
}  # fmt: skip
# 1-bit Adam communicates in its step (with distributed.compression: one_bit_adam); in
# one process it is Adam whose variance freezes after freeze_step.
OPTIMIZERS["OneBitAdam"] = OneBitAdam

TRANSFORMS: dict[str, Callable[..., optim.GradientTransform]] = {
    name: getattr(optim, name)
    for name in (
        "clip", "clip_by_norm", "clip_by_global_norm", "add_noise", "scale_by_momentum",
        "scale_by_adagrad", "scale_by_rms", "scale_by_adadelta", "scale_by_adam",
        "scale_by_nadam", "scale_by_radam", "scale_by_trust_ratio", "scale_by_sign",
        "scale_by_one_bit", "add_decayed_weights", "add_l2", "scale", "scale_by_learning_rate",
    )
}  # fmt: skip

# Schedules whose first argument is the base learning rate, and whether they take the run
# length as num_steps.
SCHEDULES: dict[str, tuple[Callable[..., Any], bool]] = {
    "constant": (schedules.constant, False),
    "cosine": (schedules.cosine_decay, True),
    "linear": (schedules.linear_decay, True),
    "polynomial": (schedules.polynomial_decay, True),
    "step": (schedules.step_decay, False),
    "multistep": (schedules.multistep_decay, False),
    "exponential": (schedules.exponential_decay, False),
    "inverse_time": (schedules.inverse_time_decay, False),
    "warm_restarts": (schedules.cosine_warm_restarts, False),
    "one_cycle": (schedules.one_cycle, True),
    # Cut when an epoch metric stops improving (options.metric, see _from_config).
    "plateau": (schedules.ReduceOnPlateau, False),
}


def split_entry(entry: Any, path: str, kind: str) -> tuple[str, dict[str, Any]]:
    """``"standardize"`` or ``{"name": "standardize", "per": "channel"}`` -> (name, args)."""
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, Mapping) and isinstance(entry.get("name"), str):
        return entry["name"], {k: v for k, v in entry.items() if k != "name"}
    raise ConfigError(
        f"each entry of '{path}' must be a {kind} name or a mapping with a 'name' key "
        f"(e.g. {{name: standardize, per: channel}}). Got {entry!r} instead.",
        key=key_of(path),
    )


def name_key(entry: Any, path: str) -> ConfigKey:
    """The key of the name of the entry at ``path``: its ``name`` (``{name: pca, ...}``),
    or the entry itself where it is the bare name (``pca``)."""
    return (*key_of(path), "name") if isinstance(entry, Mapping) else key_of(path)


# gradwise's one error format (gradwise._validation), which names the argument at fault.
_ARGUMENT = re.compile(r"The '(\w+)' parameter of ")


def argument_key(error: Exception, key: ConfigKey, arguments: Mapping[str, ConfigKey]) -> ConfigKey:
    """The key a library's ``error`` (a ValueError or TypeError of the object built from
    the config entry at ``key``) is about: the argument's, where the error names one of
    ``arguments`` (argument name -> its config key) in gradwise's one error format
    (``The 'lr' parameter of SGD must be ...``); else the entry's, ``key``."""
    named = _ARGUMENT.search(str(error))
    return arguments.get(named[1], key) if named is not None else key


def construct(factory: Callable[..., Any], args: Mapping[str, Any], path: str) -> Any:
    """Call ``factory(**args)``, turning unknown keys, missing required keys and bad values
    into ConfigErrors."""
    parameters = [
        parameter
        for parameter in inspect.signature(factory).parameters.values()
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    ]
    accepted = [parameter.name for parameter in parameters]
    entry = key_of(path)
    for key in args:
        if key not in accepted:
            raise ConfigError(unknown_key_message(key, path, accepted), key=(*entry, key))
    missing = [p.name for p in parameters if p.default is p.empty and p.name not in args]
    if missing:
        open_keys = [p for p in parameters if p.name not in args]
        raise ConfigError(_missing_keys_message(missing, path, factory, open_keys), key=entry)
    try:
        return factory(**args)
    except (ValueError, TypeError) as error:
        arguments = {name: (*entry, name) for name in args}
        raise ConfigError(
            f"in '{path}': {error}", key=argument_key(error, entry, arguments)
        ) from None


def _missing_keys_message(
    missing: Sequence[str],
    path: str,
    factory: Callable[..., Any],
    parameters: Sequence[inspect.Parameter],
) -> str:
    """``'train.schedule.options' needs 'step_size' (step_decay has no default for it;
    the keys not given: step_size, gamma=0.1); add it there``; ``parameters``: the keys
    not given."""
    target = factory.func if isinstance(factory, partial) else factory
    label = getattr(target, "__name__", type(target).__name__)
    keys = ", ".join(
        p.name if p.default is p.empty else f"{p.name}={p.default!r}" for p in parameters
    )
    needed = " and ".join(f"'{name}'" for name in missing)
    which = "it" if len(missing) == 1 else "them"
    return (
        f"'{path}' needs {needed} ({label} has no default for {which}; the keys not given: "
        f"{keys}); add {which} there"
    )


def build_preprocessing(entries: Sequence[Any], path: str) -> preprocess.Pipeline | None:
    steps = []
    for index, entry in enumerate(entries):
        where = f"{path}[{index}]"
        name, args = split_entry(entry, where, "preprocessing")
        if name not in PREPROCESSORS:
            raise ConfigError(
                unknown_name_message("preprocessing", name, where, list(PREPROCESSORS)),
                key=name_key(entry, where),
            )
        steps.append(construct(PREPROCESSORS[name], args, where))
    return preprocess.Pipeline(steps) if steps else None


#: The preprocessing steps whose output is one flat vector of principal-component scores
#: per sample, (N, k), whatever the inputs' layout (zca_whiten rotates back into it).
FLATTENING = ("pca", "pca_whiten")

#: The augmentations that bring in values from outside the input (a border, corners).
BORDERED = ("shift", "crop", "rotation")

_BATCHES = {3: "signals (N, C, L)", 4: "images (N, C, H, W)"}


def check_augmentation_layout(data: DataConfig, sample_shape: Sequence[int]) -> None:
    """Refuse an augmentation that cannot take the batches it would get, before any fit.

    Flips, shifts, crops and rotations move values between the positions of an image or
    a signal (the batches of their ``batch_ndims``): the dataset's samples, of shape
    ``sample_shape``, must have that layout, and no step of :data:`FLATTENING` may come
    before them. Entries with unknown names are left to the builders.
    """
    flattening = []
    for index, entry in enumerate(data.preprocess):
        where = f"train.data.preprocess[{index}]"
        name = split_entry(entry, where, "preprocessing")[0]
        if name in FLATTENING:
            flattening.append((where, name))
    for index, entry in enumerate(data.augment):
        where = f"train.data.augment[{index}]"
        name = split_entry(entry, where, "augmentation")[0]
        ndims = getattr(AUGMENTATIONS.get(name), "batch_ndims", None)
        if ndims is None:
            continue
        if 1 + len(sample_shape) not in ndims:
            needs = " or ".join(_BATCHES[n] for n in ndims)
            shape = ", ".join(["N", *map(str, sample_shape)])
            raise ConfigError(
                f"'{where}' ({name}) takes batches of {needs}, but the dataset's inputs have "
                f"shape ({shape}); the run would fail at its first step. Drop it (noise and "
                "mixup take inputs of any shape).",
                key=key_of(where),
            )
        if flattening:
            step_where, step = flattening[0]
            raise ConfigError(
                f"'{where}' ({name}) moves values between the positions of each image or "
                f"signal, but '{step_where}' ({step}) turns each sample into a flat vector "
                "of principal-component scores, which has no positions; the run would fail "
                f"at its first step. Drop the augmentation, or replace {step} by a step that "
                "keeps the inputs' layout (standardize, mean_subtract, min_max_scale or "
                "zca_whiten).",
                key=key_of(where),
            )


#: Maps an entry's ``fill`` (as configured) and its config path to the module's ``fill``.
FillMap = Callable[[Any, str], Any]


def build_augmentation(
    entries: Sequence[Any],
    path: str,
    seed: int,
    num_classes: int | None,
    fill_map: FillMap | None = None,
) -> tuple[nn.Module | None, regularize.Mixup | None]:
    """The augmentation modules (in order) and mixup, each seeded from the run's seed.

    ``fill_map`` turns the ``fill`` of shift, crop and rotation (default 0) into the value
    they fill with, where they run (after the preprocessing); None passes it unchanged.
    """
    modules: list[nn.Module] = []
    mixup = None
    for index, entry in enumerate(entries):
        where = f"{path}[{index}]"
        name, args = split_entry(entry, where, "augmentation")
        if name not in AUGMENTATIONS:
            raise ConfigError(
                unknown_name_message("augmentation", name, where, list(AUGMENTATIONS)),
                key=name_key(entry, where),
            )
        args = {"seed": seed * 1000 + index, **args}
        if name in BORDERED and fill_map is not None:
            args = _mapped_fill(args, where, fill_map)
        if name == "mixup":
            mixup = construct(AUGMENTATIONS[name], {"num_classes": num_classes, **args}, where)
        else:
            modules.append(construct(AUGMENTATIONS[name], args, where))
    return (nn.Sequential(*modules) if modules else None), mixup


def _mapped_fill(args: dict[str, Any], where: str, fill_map: FillMap) -> dict[str, Any]:
    """The entry's arguments with its ``fill`` mapped (a crop's constant border only)."""
    mode = args.get("padding_mode", "constant")
    if mode not in ("constant", "zeros"):
        return args  # reflect or replicate: no fill (RandomCrop refuses one)
    fill = args.get("fill", 0.0)
    if mode == "zeros":  # a crop: zeros is the inputs' 0, the default fill
        if not (isinstance(fill, int | float) and fill == 0):
            raise ConfigError(
                f"'{where}' has padding_mode zeros, which pads with 0, and fill {fill!r}; "
                "use padding_mode: constant with that fill",
                key=(*key_of(where), "padding_mode"),
            )
        args = {**args, "padding_mode": "constant"}
    return {**args, "fill": fill_map(fill, f"{where}.fill")}


def build_optimizer(
    spec: Mapping[str, Any], model: nn.Module, path: str = "train.optimizer"
) -> torch.optim.Optimizer:
    """A named optimizer (``{name: AdamW, lr: 3e-3}``) or a chain (``{chain: [...], lr: ...}``).

    Only trainable parameters (``requires_grad``) are optimized, so frozen layers stay out
    of the optimizer. ``groups`` gives layer groups their own hyperparameters as torch
    param groups: ``groups: [{params: ["0.*", "2.*"], lr: 3e-4, weight_decay: 0.0}]``
    (glob patterns over parameter names); each parameter is in at most one group, and the
    parameters no group names form the default group, first, with the top-level values.
    A group of a named optimizer may set any of its hyperparameters; a group of a chain
    sets ``lr``.
    """
    if "chain" in spec:
        return _build_chain(spec, model, path)
    name = spec.get("name")
    if not isinstance(name, str):
        raise ConfigError(
            f"'{path}' needs a 'name' (e.g. AdamW) or a 'chain' of transforms. Got {dict(spec)!r}.",
            key=key_of(path),
        )
    if name not in OPTIMIZERS:
        raise ConfigError(
            unknown_name_message("optimizer", name, f"{path}.name", list(OPTIMIZERS)),
            key=(*key_of(path), "name"),
        )
    factory = OPTIMIZERS[name]
    args = {k: v for k, v in spec.items() if k not in ("name", "groups")}
    check_group = None
    if "groups" in spec:
        # A throwaway optimizer over one tensor validates the arguments and names the
        # hyperparameters a group may set; each group's values are validated the same way.
        probe = construct(partial(factory, [_probe_tensor()]), args, path)
        names = list(getattr(probe, "hyperparameter_names", None) or probe.defaults)

        def check_group(options: Mapping[str, Any], where: str) -> None:
            for key in options:
                if key not in names:
                    raise ConfigError(
                        unknown_key_message(key, where, ["params", *names]),
                        key=(*key_of(where), key),
                    )
            construct(partial(factory, [_probe_tensor()]), {**args, **options}, where)

    params = _param_groups(model, spec.get("groups"), path, check_group)
    optimizer: torch.optim.Optimizer = construct(partial(factory, params), args, path)
    return optimizer


def _build_chain(spec: Mapping[str, Any], model: nn.Module, path: str) -> optim.Optimizer:
    extra = [key for key in spec if key not in ("chain", "lr", "groups")]
    if extra:
        raise ConfigError(
            unknown_key_message(extra[0], path, ["chain", "lr", "groups"]),
            key=(*key_of(path), extra[0]),
        )
    lr = spec.get("lr", 1e-3)
    transforms = _chain_entries(spec["chain"], path)
    if transforms[-1][0] != "scale_by_learning_rate":
        raise ConfigError(
            f"'{path}.chain' must end with scale_by_learning_rate (it applies the lr and the "
            f"schedule). Got {transforms[-1][0]} last.",
            key=key_of(transforms[-1][2]),
        )
    mask = optim.weight_decay_mask(model)

    def factory(lr: float) -> optim.GradientTransform:
        parts = []
        for name, args, where in transforms:
            if name == "scale_by_learning_rate":
                parts.append(optim.scale_by_learning_rate(args.get("lr", lr)))
            elif name in ("add_decayed_weights", "add_l2"):
                parts.append(optim.masked(construct(TRANSFORMS[name], args, where), mask))
            else:
                parts.append(construct(TRANSFORMS[name], args, where))
        return optim.chain(*parts)

    factory(lr)  # validate every entry now, not at the first step
    params = _param_groups(model, spec.get("groups"), path, _chain_group_check(factory))
    try:
        return optim.Optimizer(params, factory, lr=lr)
    except (ValueError, TypeError) as error:
        key = argument_key(error, key_of(path), {"lr": (*key_of(path), "lr")})
        raise ConfigError(f"in '{path}': {error}", key=key) from None


GroupCheck = Callable[[Mapping[str, Any], str], None]


def _chain_group_check(factory: Callable[..., optim.GradientTransform]) -> GroupCheck:
    """A chain's group may set only ``lr`` (its factory's one hyperparameter)."""

    def check_group(options: Mapping[str, Any], where: str) -> None:
        for key in options:
            if key != "lr":
                raise ConfigError(
                    unknown_key_message(key, where, ["params", "lr"]), key=(*key_of(where), key)
                )
        if not options:
            return
        try:
            optim.Optimizer([_probe_tensor()], factory, **options)
        except (ValueError, TypeError) as error:
            entry = key_of(where)
            about = argument_key(error, entry, {"lr": (*entry, "lr")})
            raise ConfigError(f"in '{where}': {error}", key=about) from None

    return check_group


def _param_groups(
    model: nn.Module, groups: Any, path: str, check_group: GroupCheck | None
) -> list[dict[str, Any]]:
    """The optimizer's param groups: the default group (if not empty), then ``groups``."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ConfigError(
            f"'{path}' has no parameter to train: every parameter of the model is frozen "
            "(see 'train.warm_start.freeze').",
            key=key_of(path),
        )
    if groups is None:
        return [{"params": [p for _, p in named]}]
    if not isinstance(groups, list) or not groups or check_group is None:
        raise ConfigError(
            f"'{path}.groups' must be a non-empty list of mappings like "
            f"{{params: ['0.*'], lr: 3e-4}}. Got {groups!r} instead.",
            key=(*key_of(path), "groups"),
        )
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    owner: dict[str, str] = {}
    built = []
    for index, entry in enumerate(groups):
        where = f"{path}.groups[{index}]"
        patterns, options = _group_entry(entry, where)
        check_group(options, where)
        members = _group_members(named, frozen, patterns, where, owner)
        built.append({"params": members, **options})
    rest = [p for name, p in named if name not in owner]
    return ([{"params": rest}] if rest else []) + built


def _group_entry(entry: Any, where: str) -> tuple[list[str], dict[str, Any]]:
    patterns = entry.get("params") if isinstance(entry, Mapping) else None
    if isinstance(patterns, str):
        patterns = [patterns]
    if not (isinstance(patterns, list) and patterns and all(isinstance(p, str) for p in patterns)):
        raise ConfigError(
            f"'{where}' must be a mapping with 'params': a list of glob patterns over "
            f"parameter names (e.g. {{params: ['0.*'], lr: 3e-4}}). Got {entry!r} instead.",
            key=(*key_of(where), "params") if patterns is not None else key_of(where),
        )
    return patterns, {k: v for k, v in entry.items() if k != "params"}


def _group_members(
    named: Sequence[tuple[str, nn.Parameter]],
    frozen: Sequence[str],
    patterns: Sequence[str],
    where: str,
    owner: dict[str, str],
) -> list[nn.Parameter]:
    """The parameters a group's patterns match; a parameter of another group is an error."""
    members: list[nn.Parameter] = []
    for pattern in patterns:
        matched = [(name, p) for name, p in named if fnmatchcase(name, pattern)]
        if not matched:
            raise ConfigError(
                _no_match_message(pattern, where, named, frozen), key=(*key_of(where), "params")
            )
        for name, parameter in matched:
            if owner.setdefault(name, where) != where:
                raise ConfigError(
                    f"parameter '{name}' is in both '{owner[name]}' and '{where}' (pattern "
                    f"{pattern!r}); a parameter may be in one group only.",
                    key=(*key_of(where), "params"),
                )
            if not any(parameter is member for member in members):
                members.append(parameter)
    return members


def _no_match_message(
    pattern: str, where: str, named: Sequence[tuple[str, nn.Parameter]], frozen: Sequence[str]
) -> str:
    frozen_matches = [name for name in frozen if fnmatchcase(name, pattern)]
    if frozen_matches:
        return (
            f"{pattern!r} in '{where}.params' matches only frozen parameters "
            f"({quote_names(frozen_matches)}), which the optimizer does not update."
        )
    return (
        f"{pattern!r} in '{where}.params' matches no parameter of the model; its trainable "
        f"parameters are {quote_names([name for name, _ in named])}."
    )


def _probe_tensor() -> torch.Tensor:
    return torch.zeros(1, requires_grad=True)


def _chain_entries(entries: Any, path: str) -> list[tuple[str, dict[str, Any], str]]:
    if not isinstance(entries, list) or not entries:
        raise ConfigError(
            f"'{path}.chain' must be a non-empty list of transforms.", key=(*key_of(path), "chain")
        )
    transforms = []
    for index, entry in enumerate(entries):
        where = f"{path}.chain[{index}]"
        name, args = split_entry(entry, where, "transform")
        if name not in TRANSFORMS:
            raise ConfigError(
                unknown_name_message("transform", name, where, list(TRANSFORMS)),
                key=name_key(entry, where),
            )
        transforms.append((name, args, where))
    return transforms


def build_schedule(
    name: str,
    options: Mapping[str, Any],
    warmup: float,
    base_lr: float,
    total_steps: int,
    path: str,
) -> Any:
    """A schedule of the learning rate over ``total_steps`` steps, with linear warmup."""
    if name not in SCHEDULES:
        raise ConfigError(
            unknown_name_message("schedule", name, f"{path}.name", list(SCHEDULES)),
            key=(*key_of(path), "name"),
        )
    factory, takes_length = SCHEDULES[name]
    warmup_steps = int(round(warmup * total_steps)) if warmup < 1 else int(warmup)
    warmup_steps = min(warmup_steps, max(total_steps - 1, 0))
    first = next(iter(inspect.signature(factory).parameters))
    args: dict[str, Any] = {first: base_lr}
    if takes_length:
        args["num_steps"] = max(total_steps - warmup_steps, 1)
    for key in options:
        if key == first:
            raise ConfigError(
                f"'{first}' in '{path}.options' comes from the optimizer's lr; set "
                "'train.optimizer.lr' instead",
                key=(*key_of(path), "options", first),
            )
    args.update(options)
    schedule = construct(factory, args, f"{path}.options")
    if warmup_steps > 0:
        schedule = schedules.linear_warmup(schedule, num_steps=warmup_steps)
    return schedule
