"""The run configuration: one dataclass per section, each field with its constraint.

The root section is called ``train`` in error messages (it is the configuration of
``gradwise train``); the paths of nested keys read ``train.data.batch_size``. Free-form
sections (the optimizer's and the schedule's arguments, a dataset's or model's options)
are checked against the signature of what they configure when the run is built.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from gradwise._validation import (
    HALF_OPEN_UNIT_INTERVAL,
    NON_NEGATIVE,
    POSITIVE,
    POSITIVE_INT,
    Boolean,
    Constraint,
    Either,
    Interval,
    OneOf,
    Satisfies,
)


def _is(kind: type | tuple[type, ...]) -> Satisfies:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = " or ".join(k.__name__ for k in kinds)
    article = "an" if names[0] in "aeiou" else "a"
    return Satisfies(
        lambda value: isinstance(value, kinds) and not isinstance(value, bool),
        f"{article} {names}",
    )


def _is_folder_name(value: Any) -> bool:
    return (
        isinstance(value, str)
        and value not in ("", ".", "..")
        and not any(sep in value for sep in {"/", "\0", os.sep, os.altsep or os.sep})
    )


STRING = _is(str)
MAPPING = _is(dict)
LIST = _is(list)
NONE = Satisfies(lambda value: value is None, "null")
OPTIONAL_POSITIVE_INT = Either((POSITIVE_INT, NONE))
OPTIONAL_STRING = Either((STRING, NONE))
FRACTION = HALF_OPEN_UNIT_INTERVAL
# Without infinities: the config's numbers become step counts and penalties, where
# ``.inf`` only fails later (a NaN loss, a schedule's check). The shared constraints
# already refuse it; the names say so where a section is declared.
FINITE = Interval()
FINITE_NON_NEGATIVE = NON_NEGATIVE
FINITE_POSITIVE = POSITIVE
RUN_NAME = Satisfies(_is_folder_name, "a single folder name (not empty, '.' or '..'; no '/')")


def setting(default: Any, constraint: Constraint, help: str) -> Any:
    """A leaf field: its default, the constraint its value must meet, one line of help."""
    if isinstance(default, list | dict):
        return field(
            default_factory=lambda: type(default)(default),
            metadata={"constraint": constraint, "help": help},
        )
    return field(default=default, metadata={"constraint": constraint, "help": help})


def section(kind: type, help: str, *, optional: bool = False, default: bool = True) -> Any:
    """A nested section; ``optional`` sections may be null (off)."""
    metadata = {"section": kind, "optional": optional, "help": help}
    if default:
        return field(default_factory=kind, metadata=metadata)
    return field(default=None, metadata=metadata)


@dataclass
class DataConfig:
    dataset: str = setting(
        "mnist1d", STRING, "a built-in dataset, a .npz/.npy/.csv file, or module:function"
    )
    validation_split: float = setting(0.1, FRACTION, "fraction of the training data held out")
    test_split: float = setting(0.2, FRACTION, "test fraction for datasets without a test set")
    batch_size: int = setting(128, POSITIVE_INT, "samples per optimizer step")
    preprocess: list[Any] = setting(
        ["standardize"], LIST, "transformers fitted on the training split, in order"
    )
    augment: list[Any] = setting([], LIST, "augmentations applied to training batches")
    options: dict[str, Any] = setting({}, MAPPING, "extra arguments for the dataset loader")


@dataclass
class ModelConfig:
    name: str = setting("cnn1d", STRING, "mlp, cnn1d, cnn2d, or module:function")
    depth: int | None = setting(None, OPTIONAL_POSITIVE_INT, "hidden layers (null: default)")
    width: int | None = setting(None, OPTIONAL_POSITIVE_INT, "units or channels per layer")
    kernel_size: int | None = setting(None, OPTIONAL_POSITIVE_INT, "convolution kernel size")
    activation: str = setting("relu", STRING, "relu, leaky_relu, tanh, gelu, ...")
    norm: str | None = setting(
        "batch",
        OneOf(("batch", "layer", "group", "instance", "none", None)),
        "normalization after each hidden layer",
    )
    dropout: float = setting(0.0, FRACTION, "dropout probability after each hidden layer")
    options: dict[str, Any] = setting({}, MAPPING, "extra arguments for the model builder")


@dataclass
class InitConfig:
    weights: str = setting("he_normal", STRING, "initializer of every Linear and Conv weight")
    biases: float = setting(0.0, FINITE, "constant for every bias")
    options: dict[str, Any] = setting(
        {}, MAPPING, "the initializer's own arguments (e.g. {std: 0.01} for normal)"
    )


@dataclass
class WarmStartConfig:
    source: str | None = setting(
        None, OPTIONAL_STRING, "a run folder or a checkpoint / state-dict file (.pt); required"
    )
    checkpoint: str = setting("last", OneOf(("last", "best")), "a run folder's last or best")
    strict: bool = setting(False, Boolean(), "fail unless every entry matches by name and shape")
    freeze: list[Any] = setting([], LIST, "globs of parameter names to freeze, e.g. ['0.*']")
    freeze_statistics: bool = setting(
        False, Boolean(), "frozen layers' batch norm uses and keeps its running statistics"
    )


@dataclass
class ScheduleConfig:
    name: str = setting("cosine", STRING, "constant, cosine, linear, step, exponential, ...")
    warmup: float = setting(
        0.05, FINITE_NON_NEGATIVE, "linear warmup: a fraction of all steps (< 1) or a step count"
    )
    options: dict[str, Any] = setting(
        {}, MAPPING, "the schedule's own arguments (see gradwise.schedules)"
    )


@dataclass
class AveragingConfig:
    method: str = setting(
        "ema", OneOf(("ema", "polyak", "swa")), "ema, polyak (uniform) or swa (Izmailov 2018)"
    )
    start: float = setting(
        0.0,
        FINITE_NON_NEGATIVE,
        "when averaging starts: a fraction of all steps (< 1) or a step count",
    )
    every: int | None = setting(
        None, OPTIONAL_POSITIVE_INT, "steps between averaged iterates (null: 1; swa: k steps)"
    )
    decay: float = setting(
        0.999,
        Interval(low=0.0, high=1.0, low_closed=False, high_closed=False),
        "ema: weight of the old average per update",
    )
    decay_warmup: bool = setting(False, Boolean(), "ema: decay_t = min(decay, (1+t)/(10+t))")
    swa_lr: float | None = setting(
        None,
        Either((FINITE_NON_NEGATIVE, NONE)),
        "swa: learning rate from start on (null: the run's)",
    )
    cycle_steps: int | None = setting(
        None, OPTIONAL_POSITIVE_INT, "swa: cyclical lr period, averaged at each cycle's end"
    )
    anneal_steps: int = setting(
        0, Interval(low=0, kind="int"), "swa, constant lr: cosine from the run's lr to swa_lr"
    )
    use_buffers: bool = setting(
        False, Boolean(), "average batch-norm statistics instead of recomputing them"
    )


@dataclass
class EarlyStoppingConfig:
    monitor: str = setting("val_loss", STRING, "metric to watch")
    mode: str = setting("auto", OneOf(("auto", "min", "max")), "min, max or auto")
    min_delta: float = setting(0.0, FINITE_NON_NEGATIVE, "smallest change that counts as better")
    patience: int = setting(5, Interval(low=0, kind="int"), "epochs without improvement")
    restore_best_weights: bool = setting(True, Boolean(), "end with the best epoch's weights")


@dataclass
class RegularizationConfig:
    l1: float = setting(0.0, FINITE_NON_NEGATIVE, "L1 penalty strength on weights")
    l2: float = setting(0.0, FINITE_NON_NEGATIVE, "L2 penalty strength on weights (alpha sum w^2)")
    max_norm: float | None = setting(
        None, Either((FINITE_POSITIVE, NONE)), "max norm of each unit's weights"
    )
    early_stopping: EarlyStoppingConfig | None = section(
        EarlyStoppingConfig, "stop when a validation metric stops improving", optional=True,
        default=False,
    )  # fmt: skip


@dataclass
class CheckpointConfig:
    every_steps: int | None = setting(
        None, OPTIONAL_POSITIVE_INT, "also checkpoint every N steps (always at epoch ends)"
    )
    monitor: str = setting("val_accuracy", STRING, "metric that picks the best checkpoint")
    mode: str = setting("auto", OneOf(("auto", "min", "max")), "min, max or auto")


@dataclass
class MonitorConfig:
    every: int = setting(50, POSITIVE_INT, "steps between probes on the monitoring subset")
    cheap_every: int = setting(10, POSITIVE_INT, "steps between gradient and update measurements")
    subset: int = setting(256, POSITIVE_INT, "training samples in the fixed monitoring subset")
    histograms: bool = setting(True, Boolean(), "record activation and gradient histograms")
    target_accuracy: float | None = setting(
        None,
        Either((Interval(low=0.0, high=1.0, low_closed=False), NONE)),
        "training accuracy the run should reach: UNDERFITTING below it (null: no target)",
    )
    target_loss: float | None = setting(
        None,
        Either((FINITE_POSITIVE, NONE)),
        "training loss the run should reach (null: no target)",
    )


@dataclass
class DistributedConfig:
    backend: str = setting(
        "auto", OneOf(("auto", "gloo", "nccl")), "auto: nccl on GPU, gloo on CPU"
    )
    compression: str = setting(
        "none",
        STRING,
        "none, fp16, powersgd, one_bit, sign_majority, one_bit_two_phase, one_bit_adam",
    )
    compression_options: dict[str, Any] = setting(
        {}, MAPPING, "the compression's own options (e.g. {matrix_approximation_rank: 2})"
    )
    warmup_steps: int = setting(
        2, Interval(low=2, kind="int"), "plain allreduce steps before compression (>= 2)"
    )
    reference_batch_size: int | None = setting(
        None, OPTIONAL_POSITIVE_INT, "linear scaling rule: lr x global batch / this (null: off)"
    )
    scaling_warmup_steps: int = setting(
        0, Interval(low=0, kind="int"), "ramp from the config's lr to the scaled lr (Goyal 2017)"
    )
    find_unused_parameters: bool = setting(
        False, Boolean(), "DDP's: true for a model with parameters a forward pass may not use"
    )
    sync_batch_norm: bool = setting(
        False, Boolean(), "pool batch-norm statistics over the processes (SyncBatchNorm; GPUs)"
    )
    timeout_s: int = setting(300, POSITIVE_INT, "seconds a rank waits for the others")


@dataclass
class PruneConfig:
    ticket: str | None = setting(
        None, STRING, "a ticket file (gradwise prune writes them): masks and start weights"
    )  # required: prepare_run refuses a prune section without it


@dataclass
class RunConfig:
    name: str | None = setting(None, Either((RUN_NAME, NONE)), "run folder name (null: generated)")
    runs_dir: str = setting("runs", STRING, "where run folders go")
    seed: int = setting(
        0, Interval(low=0, high=2**32 - 1, kind="int"), "seed for data order, init, dropout"
    )
    device: str = setting("cpu", OneOf(("cpu", "cuda", "auto")), "cpu, cuda or auto")
    epochs: int | None = setting(20, OPTIONAL_POSITIVE_INT, "passes over the training data")
    steps: int | None = setting(None, OPTIONAL_POSITIVE_INT, "optimizer steps (overrides epochs)")
    loss: str = setting("cross_entropy", OneOf(("cross_entropy", "hinge", "mse")), "the loss")
    log_every: int = setting(10, POSITIVE_INT, "steps between metric records")
    data: DataConfig = section(DataConfig, "dataset, splits, batches, preprocessing")
    model: ModelConfig = section(ModelConfig, "architecture")
    init: InitConfig = section(InitConfig, "initialization")
    warm_start: WarmStartConfig | None = section(
        WarmStartConfig, "start from another run's weights (null: off)", optional=True,
        default=False,
    )  # fmt: skip
    optimizer: dict[str, Any] = setting(
        {"name": "AdamW", "lr": 3e-3, "weight_decay": 0.05},
        MAPPING,
        "a named optimizer with its arguments, or a chain of transforms",
    )
    clip_grad_norm: float | None = setting(
        None,
        Either((FINITE_POSITIVE, NONE)),
        "clip the gradient norm over all parameters (every param group) before each step",
    )
    schedule: ScheduleConfig | None = section(
        ScheduleConfig, "learning-rate schedule", optional=True
    )
    averaging: AveragingConfig | None = section(
        AveragingConfig, "iterate averaging: ema, polyak or swa (null: off)", optional=True,
        default=False,
    )  # fmt: skip
    regularization: RegularizationConfig = section(RegularizationConfig, "penalties, stopping")
    checkpoint: CheckpointConfig = section(CheckpointConfig, "checkpoint cadence")
    monitor: MonitorConfig | None = section(
        MonitorConfig, "the training doctor's live monitoring (null: off)", optional=True
    )
    distributed: DistributedConfig = section(
        DistributedConfig, "several processes (gradwise train --nproc N, or torchrun)"
    )
    search: dict[str, Any] = setting(
        {}, MAPPING, "a hyperparameter search space for gradwise search (train ignores it)"
    )
    prune: PruneConfig | None = section(
        PruneConfig, "train a pruned network from a ticket (null: dense)", optional=True,
        default=False,
    )  # fmt: skip
