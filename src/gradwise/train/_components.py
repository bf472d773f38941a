"""Named components a configuration can ask for: preprocessing, augmentation, optimizers,
schedules. Each builder turns a config entry into the library object, and turns a bad
entry into a one-line :class:`ConfigError` with the entry's path.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import torch
from torch import nn

from gradwise import optim, preprocess, regularize, schedules
from gradwise.config import ConfigError, unknown_key_message, unknown_name_message
from gradwise.distributed._one_bit_adam import OneBitAdam

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
}


def split_entry(entry: Any, path: str, kind: str) -> tuple[str, dict[str, Any]]:
    """``"standardize"`` or ``{"name": "standardize", "per": "channel"}`` -> (name, args)."""
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, Mapping) and isinstance(entry.get("name"), str):
        return entry["name"], {k: v for k, v in entry.items() if k != "name"}
    raise ConfigError(
        f"each entry of '{path}' must be a {kind} name or a mapping with a 'name' key "
        f"(e.g. {{name: standardize, per: channel}}). Got {entry!r} instead."
    )


def construct(factory: Callable[..., Any], args: Mapping[str, Any], path: str) -> Any:
    """Call ``factory(**args)``, turning unknown keys and bad values into ConfigErrors."""
    accepted = [
        name
        for name, parameter in inspect.signature(factory).parameters.items()
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    ]
    for key in args:
        if key not in accepted:
            raise ConfigError(unknown_key_message(key, path, accepted))
    try:
        return factory(**args)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"in '{path}': {error}") from None


def build_preprocessing(entries: Sequence[Any], path: str) -> preprocess.Pipeline | None:
    steps = []
    for index, entry in enumerate(entries):
        where = f"{path}[{index}]"
        name, args = split_entry(entry, where, "preprocessing")
        if name not in PREPROCESSORS:
            raise ConfigError(
                unknown_name_message("preprocessing", name, where, list(PREPROCESSORS))
            )
        steps.append(construct(PREPROCESSORS[name], args, where))
    return preprocess.Pipeline(steps) if steps else None


def build_augmentation(
    entries: Sequence[Any], path: str, seed: int, num_classes: int | None
) -> tuple[nn.Module | None, regularize.Mixup | None]:
    """The augmentation modules (in order) and mixup, each seeded from the run's seed."""
    modules: list[nn.Module] = []
    mixup = None
    for index, entry in enumerate(entries):
        where = f"{path}[{index}]"
        name, args = split_entry(entry, where, "augmentation")
        if name not in AUGMENTATIONS:
            raise ConfigError(
                unknown_name_message("augmentation", name, where, list(AUGMENTATIONS))
            )
        args = {"seed": seed * 1000 + index, **args}
        if name == "mixup":
            mixup = construct(AUGMENTATIONS[name], {"num_classes": num_classes, **args}, where)
        else:
            modules.append(construct(AUGMENTATIONS[name], args, where))
    return (nn.Sequential(*modules) if modules else None), mixup


def build_optimizer(
    spec: Mapping[str, Any], model: nn.Module, path: str = "train.optimizer"
) -> torch.optim.Optimizer:
    """A named optimizer (``{name: AdamW, lr: 3e-3}``) or a chain (``{chain: [...], lr: ...}``)."""
    if "chain" in spec:
        return _build_chain(spec, model, path)
    name = spec.get("name")
    if not isinstance(name, str):
        raise ConfigError(
            f"'{path}' needs a 'name' (e.g. AdamW) or a 'chain' of transforms. Got {dict(spec)!r}."
        )
    if name not in OPTIMIZERS:
        raise ConfigError(unknown_name_message("optimizer", name, f"{path}.name", list(OPTIMIZERS)))
    args = {k: v for k, v in spec.items() if k != "name"}
    optimizer: torch.optim.Optimizer = construct(
        partial(OPTIMIZERS[name], model.parameters()), args, path
    )
    return optimizer


def _build_chain(spec: Mapping[str, Any], model: nn.Module, path: str) -> optim.Optimizer:
    extra = [key for key in spec if key not in ("chain", "lr")]
    if extra:
        raise ConfigError(unknown_key_message(extra[0], path, ["chain", "lr"]))
    lr = spec.get("lr", 1e-3)
    transforms = _chain_entries(spec["chain"], path)
    if transforms[-1][0] != "scale_by_learning_rate":
        raise ConfigError(
            f"'{path}.chain' must end with scale_by_learning_rate (it applies the lr and the "
            f"schedule). Got {transforms[-1][0]} last."
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
    try:
        return optim.Optimizer(model.parameters(), factory, lr=lr)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"in '{path}': {error}") from None


def _chain_entries(entries: Any, path: str) -> list[tuple[str, dict[str, Any], str]]:
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"'{path}.chain' must be a non-empty list of transforms.")
    transforms = []
    for index, entry in enumerate(entries):
        where = f"{path}.chain[{index}]"
        name, args = split_entry(entry, where, "transform")
        if name not in TRANSFORMS:
            raise ConfigError(unknown_name_message("transform", name, where, list(TRANSFORMS)))
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
        raise ConfigError(unknown_name_message("schedule", name, f"{path}.name", list(SCHEDULES)))
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
                "'train.optimizer.lr' instead"
            )
    args.update(options)
    schedule = construct(factory, args, f"{path}.options")
    if warmup_steps > 0:
        schedule = schedules.linear_warmup(schedule, num_steps=warmup_steps)
    return schedule
