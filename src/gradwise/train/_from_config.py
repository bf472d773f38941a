"""From a validated configuration to a running Trainer: what ``gradwise train`` does.

Everything is built (data, preprocessing, model, optimizer, schedule) before the run
folder is made or a step runs, so a configuration error costs nothing.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradwise import init, preprocess, schedules
from gradwise.averaging import StochasticWeightAverage, WeightAverage
from gradwise.averaging._build import averaging_for_run
from gradwise.config import (
    AveragingConfig,
    ConfigError,
    ConfigKey,
    RunConfig,
    config_to_dict,
    key_of,
    parse_config,
    read_file,
    unknown_name_message,
)
from gradwise.config import total_steps as total_steps_of_run
from gradwise.data import Dataset, DataSplits, available_datasets, load_dataset, load_entry_point
from gradwise.distributed._hooks import COMPRESSIONS, check_compression
from gradwise.distributed._one_bit_adam import OneBitAdam
from gradwise.distributed._world import World
from gradwise.models import MODELS, build_model
from gradwise.preprocess._pipeline import naming_steps
from gradwise.regularize import EarlyStopping, MaxNorm, Mixup, Penalty
from gradwise.runs import RunFolder, RunFolderError, read_summary, write_config
from gradwise.schedules import ScheduleLR
from gradwise.train._callbacks import Callback, TrainState
from gradwise.train._components import (
    argument_key,
    build_augmentation,
    build_optimizer,
    build_preprocessing,
    build_schedule,
    check_augmentation_layout,
)
from gradwise.train._trainer import (
    SMALLEST_LAST_BATCH,
    FitResult,
    Trainer,
    epoch_metric_names,
    training_batches,
)
from gradwise.train._warm_start import WarmStartReport, freeze, warm_start


@dataclass
class PreparedRun:
    """Everything a configured run needs, built and checked, before any file is written."""

    config: RunConfig
    data: DataSplits
    preprocessing: preprocess.Preprocessor | None
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: ScheduleLR | None
    augment: nn.Module | None
    mixup: Mixup | None
    total_steps: int
    device: torch.device
    averaging: WeightAverage | None = None
    warm_start: WarmStartReport | None = None
    #: The ConstantFeatureWarnings of fitting the preprocessing, kept to be issued once
    #: (:meth:`warn_preprocessing`) and recorded in the run's summary.
    preprocessing_warnings: tuple[str, ...] = ()
    #: The epoch metric a ``plateau`` schedule observes (None: no plateau schedule).
    plateau_metric: str | None = None

    def warn_preprocessing(self) -> None:
        """Issue the preprocessing's ConstantFeatureWarnings. :func:`prepare_run` only
        keeps them: it runs once per rank, in the launcher's check and per probe or seed,
        so the command that uses the run (train, doctor, lr-find, config) issues
        them, once."""
        for message in self.preprocessing_warnings:
            warnings.warn(
                message,  # names its entry: see _entry_label
                preprocess.ConstantFeatureWarning,
                stacklevel=3,  # the caller of the command's function (train(), ...)
            )


def prepare_run(
    config: RunConfig,
    *,
    resuming: bool = False,
    preprocessing: preprocess.Preprocessor | None = None,
) -> PreparedRun:
    """Build data, model and optimizer from ``config``; raise ConfigError on any problem.

    ``resuming``: the run continues from its own checkpoint, so a ``warm_start`` source is
    not read (it need not exist any more); its ``freeze`` still applies.
    ``preprocessing``: a fitted chain to apply instead of fitting ``data.preprocess`` on
    the training split (a run folder's own, :func:`saved_preprocessing`: what the model
    was trained on, even if the data file changed since).
    """
    device = _device(config.device)
    torch.manual_seed(config.seed)
    entry_points: dict[str, Any] = {}
    data = _inputs_as_features(_load_data(config, entry_points), config)
    _check_augmentations_take(data, config)
    _check_loss_fits_task(config.loss, data)
    _check_monitored_metrics(config, data)
    check_augmentation_layout(config.data, tuple(data.train.inputs.shape[1:]))
    raw_train_inputs = data.train.inputs
    data, preprocessing, preprocessing_warnings = _preprocess(data, config, preprocessing)
    model = _build_model(config, data, entry_points).to(device)
    _initialize(model, config)
    warm = _warm_start(model, config, resuming)
    _apply_ticket(model, config)
    steps_per_epoch = _steps_per_epoch(data.train, config.data.batch_size)
    total_steps = total_steps_of_run(config, steps_per_epoch)
    scale = _linear_scaling(config)
    optimizer = build_optimizer(_scaled_optimizer(config.optimizer, scale), model)
    _check_distributed(config, optimizer)
    with _about(("averaging",), _AVERAGING_ARGUMENTS):
        averaging = averaging_for_run(config.averaging, model, total_steps)
    plateau_metric = _plateau_metric(config, data)
    scheduler = _scheduler(config, optimizer, total_steps, scale, averaging, plateau_metric)
    augment, mixup = build_augmentation(
        config.data.augment,
        "train.data.augment",
        config.seed,
        data.num_classes,
        partial(_preprocessed_fill, raw_train_inputs, preprocessing),
    )
    if mixup is not None and config.loss == "hinge":
        raise ConfigError(
            "mixup in 'train.data.augment' needs loss cross_entropy or mse, not hinge",
            key=("data", "augment"),
        )
    return PreparedRun(
        config,
        data,
        preprocessing,
        model,
        optimizer,
        scheduler,
        augment,
        mixup,
        total_steps,
        device,
        averaging,
        warm_start=warm,
        preprocessing_warnings=preprocessing_warnings,
        plateau_metric=plateau_metric,
    )


def make_trainer(
    prepared: PreparedRun,
    run: RunFolder | None,
    *,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
    world: World | None = None,
    rank_state: Any = None,
) -> Trainer:
    """The Trainer for a prepared run, with the config's regularization attached.

    ``callbacks`` run after the config's own (the live doctor, when monitoring is on);
    ``world`` and ``rank_state`` are the Trainer's (distributed runs).
    """
    config = prepared.config
    regularization = config.regularization
    penalty = None
    if regularization.l1 or regularization.l2:
        penalty = Penalty(prepared.model, l1=regularization.l1, l2=regularization.l2)
    if regularization.max_norm is not None:
        MaxNorm(regularization.max_norm).attach(prepared.optimizer, prepared.model)
    early_stopping = None
    if regularization.early_stopping is not None:
        options = config_to_dict(regularization.early_stopping)
        early_stopping = EarlyStopping(**options)
    main = world is None or world.is_main
    doctor = [] if config.monitor is None else [_live_doctor(prepared, run, main=main)]
    plateaus: list[Callback] = []
    if prepared.plateau_metric is not None and prepared.scheduler is not None:
        plateaus.append(ObservePlateaus(prepared.scheduler, prepared.plateau_metric))
    pruning, pruning_summary = _pruning(prepared, run if main else None)
    return Trainer(
        prepared.model,
        prepared.optimizer,
        prepared.data,
        loss=config.loss,
        batch_size=config.data.batch_size,
        steps=prepared.total_steps,
        scheduler=prepared.scheduler,
        clip_grad_norm=config.clip_grad_norm,
        penalty=penalty,
        augment=prepared.augment,
        mixup=prepared.mixup,
        early_stopping=early_stopping,
        callbacks=[*plateaus, *pruning, *doctor, *callbacks],
        run=run,
        seed=config.seed,
        device=prepared.device,
        log_every=config.log_every,
        checkpoint_every=config.checkpoint.every_steps,
        monitor=_monitor(config, prepared.data),
        monitor_mode=config.checkpoint.mode,
        progress=progress,
        metadata={**_metadata(config, prepared), **pruning_summary},
        world=world,
        rank_state=rank_state,
        averaging=prepared.averaging,
    )


def _live_doctor(prepared: PreparedRun, run: RunFolder | None, *, main: bool) -> Callback:
    """The monitor that raises findings live, on a fixed subset of the training split.

    Every rank of a distributed run watches its model, but only the ``main`` one prints
    the findings and writes them to the run folder: from every rank, each finding was
    printed once per rank and their appends to findings.jsonl raced."""
    from gradwise.doctor import LiveDoctor
    from gradwise.monitor import Thresholds, watch

    settings = prepared.config.monitor
    assert settings is not None  # noqa: S101 - the caller checked
    # A seeded random subset: some splits are ordered by class (spirals), so the first
    # samples would not represent the data.
    subset = prepared.data.train.sample(settings.subset, prepared.config.seed)
    monitor = watch(
        prepared.model,
        prepared.optimizer,
        monitor_data=subset,
        loss_fn=prepared.config.loss,
        every=settings.every,
        cheap_every=settings.cheap_every,
        histograms=settings.histograms,
        thresholds=Thresholds(
            target_accuracy=settings.target_accuracy, target_loss=settings.target_loss
        ),
    )
    if not main:
        return LiveDoctor(monitor, None, say=_silent)
    return LiveDoctor(monitor, run)


def _silent(message: str) -> None:
    """A rank other than the first says nothing: the first says it once."""


def train(
    config: RunConfig, *, progress: bool = True, callbacks: Sequence[Callback] = ()
) -> FitResult:
    """Run a configured training from scratch in a new run folder (``callbacks`` added)."""
    prepared = prepare_run(config)
    prepared.warn_preprocessing()
    folder = RunFolder.create(config.runs_dir, config.name, prefix=run_prefix(config))
    config = replace(config, name=folder.path.name)
    prepared.config = config
    write_config(folder, config_to_dict(config))
    if prepared.preprocessing is not None:
        preprocess.save(prepared.preprocessing, folder.preprocess_path)
    if progress and prepared.warm_start is not None:
        print(prepared.warm_start, file=sys.stderr)
    trainer = make_trainer(prepared, folder, progress=progress, callbacks=callbacks)
    return _fit_and_report(trainer, folder, False)


def run_prefix(config: RunConfig) -> str:
    """The start of a generated run folder name: ``<dataset>-<model>``."""
    return f"{_short_name(config.data.dataset)}-{_short_name(config.model.name)}"


# A run with one of these statuses finished its budget (or stopped early by its own rule).
FINISHED = ("completed", "early_stopped")


def resume(
    run: str | Path, *, progress: bool = True, callbacks: Sequence[Callback] = ()
) -> FitResult:
    """Continue a run from its last checkpoint, rebuilt from the run folder's config."""
    folder = resumable_folder(run)
    config = parse_config(read_file(folder.config_path))
    prepared = prepare_run(config, resuming=True, preprocessing=saved_preprocessing(folder))
    if config.warm_start is not None:
        # The checkpoint wins over the source; the summary keeps the first start's report.
        record = read_summary(folder).get("warm_start") if folder.summary_path.is_file() else None
        prepared.warm_start = WarmStartReport.from_dict(record) if record else None
    keep_preprocessing_warnings(prepared, folder)
    trainer = make_trainer(prepared, folder, progress=progress, callbacks=callbacks)
    return _fit_and_report(trainer, folder, True)


def keep_preprocessing_warnings(prepared: PreparedRun, folder: RunFolder) -> None:
    """A resumed run does not fit its preprocessing again: its summary keeps the warnings
    of the first start (an unreadable summary keeps none)."""
    if prepared.preprocessing_warnings or not folder.summary_path.is_file():
        return
    try:
        recorded = read_summary(folder).get("preprocessing_warnings")
    except (RunFolderError, ValueError):
        return
    if isinstance(recorded, list):
        prepared.preprocessing_warnings = tuple(str(message) for message in recorded)


def saved_preprocessing(folder: RunFolder) -> preprocess.Preprocessor | None:
    """The preprocessing a run was trained with (its ``preprocess.npz``), fitted; None
    when the run has none. A file that cannot be read is a RunFolderError naming it."""
    path = folder.preprocess_path
    if not path.is_file():
        return None
    try:
        return preprocess.load(path)
    except (ValueError, OSError, KeyError) as error:
        raise RunFolderError(
            f"cannot read the run's preprocessing from {path}: {error}. Restore the file "
            "from a copy of the run folder; without it the inputs would be normalized with "
            "other statistics than the model was trained on."
        ) from None


def resumable_folder(run: str | Path) -> RunFolder:
    """The run folder ``run``, with a checkpoint and not finished; else the ConfigError
    (RunFolderError: no run folder) that says why it cannot be resumed."""
    folder = RunFolder.open(run)
    if not folder.last_checkpoint.is_file():
        raise ConfigError(
            f"{folder.path} has no checkpoint to resume from (no {folder.last_checkpoint.name})."
        )
    try:
        status = read_summary(folder).get("status")
    except (RunFolderError, ValueError):  # no summary, or a damaged one: try the checkpoint
        status = None
    if status in FINISHED:
        raise ConfigError(
            f"{folder.path} has {status.replace('_', ' ')}: there is nothing to resume. Start a "
            f"new run from its config (gradwise train {folder.config_path} --set name=null: "
            "the config names this run's folder), with more epochs if it needs them."
        )
    return folder


def _fit_and_report(trainer: Trainer, folder: RunFolder, resume: bool) -> FitResult:
    """Train, then write report.html however the run ended (diverged and failed runs too)."""
    try:
        return trainer.fit(resume=resume)
    finally:
        from gradwise.report import build_report

        build_report(folder)


# -- the pieces ----------------------------------------------------------------------------


_AVERAGING_ARGUMENTS = {f.name: ("averaging", f.name) for f in dataclasses.fields(AveragingConfig)}


@contextmanager
def _about(key: ConfigKey, arguments: Mapping[str, ConfigKey] | None = None) -> Iterator[None]:
    """A ConfigError raised inside without a key gets ``key`` (or its argument's, see
    :func:`argument_key`): the averaging and prune sections' checks, outside this package,
    say the key they are about in words only."""
    try:
        yield
    except ConfigError as error:
        if error.key is not None:
            raise
        raise ConfigError(str(error), key=argument_key(error, key, arguments or {})) from None


def _steps_per_epoch(train: Dataset, batch_size: int) -> int:
    """The Trainer's steps per epoch (its batches drop a last batch of 1 sample)."""
    if len(train) < min(batch_size, SMALLEST_LAST_BATCH):
        raise ConfigError(
            f"the training split holds {len(train)} sample, and a batch of 1 sample is "
            f"dropped (batch norm cannot train on it): training needs "
            f"{SMALLEST_LAST_BATCH} or more. Use more data, or smaller "
            "'train.data.validation_split' and 'train.data.test_split'",
            key=("data", "dataset"),
        )
    return len(training_batches(train, batch_size))


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "'train.device' is cuda but no CUDA GPU is available; use cpu or auto", key=("device",)
        )
    return torch.device(name)


def _check_monitored_metrics(config: RunConfig, data: DataSplits) -> None:
    metrics = epoch_metric_names(data, averaging=config.averaging is not None)
    stopping = config.regularization.early_stopping
    if stopping is not None:
        _check_metric(stopping.monitor, metrics, "train.regularization.early_stopping.monitor")
    # As the Trainer will read it (val_* without a validation split -> train_*; accuracy
    # on regression targets -> loss).
    monitor = _monitor(config, data)
    _check_metric(monitor, metrics, "train.checkpoint.monitor")
    swapped = config.checkpoint.monitor.endswith("accuracy") and monitor.endswith("loss")
    if swapped and config.checkpoint.mode == "max":  # e.g. a search's accuracy direction
        raise ConfigError(
            f"'train.checkpoint.monitor' is {config.checkpoint.monitor!r}, which "
            f"regression data replaces with {monitor!r}, but 'train.checkpoint.mode' "
            "is max: the best checkpoint would be the highest loss. Use mode auto or "
            "min, or monitor (and search on) a loss",
            key=("checkpoint", "mode"),
        )
    plateau = _plateau_metric(config, data)
    if plateau is not None:
        _check_metric(plateau, metrics, "train.schedule.options.metric")


def _plateau_metric(config: RunConfig, data: DataSplits) -> str | None:
    """The epoch metric a ``plateau`` schedule observes: ``options.metric``, by default
    the validation loss (the training loss without a validation split)."""
    if config.schedule is None or config.schedule.name != "plateau":
        return None
    default = "val_loss" if data.validation is not None else "train_loss"
    return str(config.schedule.options.get("metric", default))


def _check_metric(name: str, metrics: Sequence[str], key: str) -> None:
    """A monitored metric must be one the run records: a typo or a missing validation
    split would otherwise fail after the first epoch (early stopping) or silently leave
    the run without best.pt (the checkpoint's monitor)."""
    if name not in metrics:
        raise ConfigError(
            f"'{key}' is {name!r}, which this run does not record; it records "
            f"{', '.join(repr(m) for m in metrics if m != 'lr')}"
            + ("" if any(m.startswith("val_") for m in metrics) else " (no validation split)"),
            key=key_of(key),
        )


def _check_loss_fits_task(loss: str, data: DataSplits) -> None:
    """Classification losses need class targets with at least two classes: on regression
    targets or a single class, cross-entropy over one output is 0 whatever the weights,
    so the run would "train" to a perfect loss and learn nothing."""
    if loss not in ("cross_entropy", "hinge"):
        return
    if data.task != "classification":
        raise ConfigError(
            f"'train.loss' is {loss}, a classification loss, but the dataset's targets are "
            f"{data.task} targets; use loss: mse (or a classification dataset)",
            key=("loss",),
        )
    if data.num_classes is not None and data.num_classes < 2:
        raise ConfigError(
            f"'train.loss' is {loss}, but the training data has {data.num_classes} class: "
            "a classifier needs at least 2 (check the labels, or use loss: mse)",
            key=("loss",),
        )


def _is_entry_point(name: str) -> bool:
    return ":" in name and Path(name).suffix not in (".npz", ".npy", ".csv")


def _entry_point(spec: str, options: dict[str, Any], cache: dict[str, Any], path: str) -> Any:
    if spec not in cache:
        try:
            cache[spec] = load_entry_point(spec, **options)
        except (ValueError, TypeError) as error:
            raise ConfigError(f"in '{path}': {error}", key=key_of(path)) from None
    return cache[spec]


def _load_data(config: RunConfig, entry_points: dict[str, Any]) -> DataSplits:
    data = config.data
    if _is_entry_point(data.dataset):
        loaded = _entry_point(data.dataset, data.options, entry_points, "train.data.dataset")
        if loaded.data is None:
            raise ConfigError(
                f"entry point {data.dataset} in 'train.data.dataset' returned no data",
                key=("data", "dataset"),
            )
        return loaded.data
    is_file = Path(data.dataset).suffix in (".npz", ".npy", ".csv")
    if not is_file and data.dataset not in available_datasets():
        raise ConfigError(
            unknown_name_message(
                "dataset", data.dataset, "train.data.dataset", available_datasets()
            ),
            key=("data", "dataset"),
        )
    try:
        return load_dataset(
            data.dataset,
            validation_split=data.validation_split,
            test_split=data.test_split,
            seed=config.seed,
            **data.options,
        )
    except (ValueError, TypeError, OSError) as error:
        arguments = {
            "validation_split": ("data", "validation_split"),
            "test_split": ("data", "test_split"),
            **{name: ("data", "options", name) for name in data.options},
        }
        key = argument_key(error, ("data",), arguments)
        raise ConfigError(f"in 'train.data': {error}", key=key) from None


def _inputs_as_features(data: DataSplits, config: RunConfig) -> DataSplits:
    """``data`` with integer inputs as float32 features where the run can only read them
    so: a built-in model (its first layer multiplies float weights) or a preprocessing
    chain (means, scales, rotations). Integer inputs for a model from an entry point stay
    integers (token ids for an ``nn.Embedding``), as :class:`gradwise.data.Dataset` keeps
    them."""
    if data.train.inputs.is_floating_point():
        return data
    if _is_entry_point(config.model.name) and not config.data.preprocess:
        return data

    def as_float(dataset: Dataset) -> Dataset:
        return replace(dataset, inputs=dataset.inputs.float())

    return replace(
        data,
        train=as_float(data.train),
        validation=None if data.validation is None else as_float(data.validation),
        test=None if data.test is None else as_float(data.test),
    )


def _check_augmentations_take(data: DataSplits, config: RunConfig) -> None:
    """Refuse augmentations of integer inputs (ids an entry point's model takes as they
    are): a shift, noise or a mix would make floats of them, or fail inside torch."""
    if config.data.augment and not data.train.inputs.is_floating_point():
        raise ConfigError(
            f"'train.data.augment' changes input values (shifts, flips, noise, mixup), but "
            f"this run's inputs are integers ({data.train.inputs.dtype}: ids, which the "
            f"model {config.model.name} takes as they are); remove the augmentations, or "
            "give the model float inputs",
            key=("data", "augment"),
        )


def _preprocess(
    data: DataSplits, config: RunConfig, saved: preprocess.Preprocessor | None = None
) -> tuple[DataSplits, preprocess.Preprocessor | None, tuple[str, ...]]:
    """Fit the preprocessing chain on the training split only (or take ``saved``, fitted
    before), then apply it to every split; also return the fit's ConstantFeatureWarnings."""
    pipeline = saved or build_preprocessing(config.data.preprocess, "train.data.preprocess")
    if pipeline is None:
        return data, None, ()
    constant = _fit_preprocessing(pipeline, data.train.inputs) if saved is None else ()

    def transformed(dataset: Dataset, split: str) -> Dataset:
        labels = _EntryLabels()
        try:
            with naming_steps(labels):
                return replace(dataset, inputs=pipeline.transform(dataset.inputs))
        except ValueError as error:
            origin = (
                "the run's preprocess.npz was fitted on inputs of another shape; the data "
                "file changed since the run started: restore it, or start a new run"
                if saved is not None
                else f"the {split} split does not fit the preprocessing fitted on the "
                "training split"
            )
            raise _preprocessing_error(error, labels.index, f" ({origin})") from None

    train = transformed(data.train, "training")
    shape = tuple(train.inputs.shape[1:])
    splits = replace(
        data,
        train=train,
        validation=None if data.validation is None else transformed(data.validation, "validation"),
        test=None if data.test is None else transformed(data.test, "test"),
        input_shape=shape,
    )
    return splits, pipeline, constant


def _fit_preprocessing(pipeline: preprocess.Preprocessor, inputs: Any) -> tuple[str, ...]:
    """Fit ``pipeline``; return its ConstantFeatureWarnings' messages instead of issuing them.

    One run calls :func:`prepare_run` more than once (the launcher's check and every rank
    of a distributed run; the doctor's probe runs, each seed of a pruning study), so each
    call keeps the warnings, and the process that trains issues them once
    (:meth:`PreparedRun.warn_preprocessing`) and records them in the summary.
    """
    labels = _EntryLabels()
    with warnings.catch_warnings(record=True) as caught, naming_steps(labels):
        warnings.simplefilter("always", preprocess.ConstantFeatureWarning)
        try:
            pipeline.fit(inputs)
        except ValueError as error:
            raise _preprocessing_error(error, labels.index) from None
    constant = []
    for warning in caught:
        if issubclass(warning.category, preprocess.ConstantFeatureWarning):
            constant.append(str(warning.message))
        else:  # not ours to keep: issued as if it had not been caught
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    return tuple(constant)


class _EntryLabels:
    """How ``gradwise train`` names a preprocessing step in errors and warnings: by the
    config entry it came from (entry i of ``data.preprocess`` is the pipeline's steps[i]).

    A pipeline labels each step as it reaches it, so ``index`` is the entry of the step
    that ran last: the one at fault when the pipeline raises (None: none ran).
    """

    def __init__(self) -> None:
        self.index: int | None = None

    def __call__(self, index: int, step: preprocess.Preprocessor) -> str:
        self.index = index
        return f"in 'train.data.preprocess[{index}]', {step!r}"


def _preprocessing_error(error: ValueError, index: int | None, origin: str = "") -> ConfigError:
    """The preprocessing's ``error`` (and its ``origin``) as a ConfigError about the entry
    at ``index`` of ``data.preprocess``: a step's error names its entry already
    (:class:`_EntryLabels`); one about the inputs as a whole, before any step ran, gets
    the section's path."""
    message = str(error)
    if not message.startswith("in 'train.data.preprocess["):
        message = f"in 'train.data.preprocess': {message}"
    key: ConfigKey = ("data", "preprocess") if index is None else ("data", "preprocess", index)
    return ConfigError(f"{message}{origin}", key=key)


def _preprocessed_fill(
    raw_inputs: torch.Tensor, preprocessing: preprocess.Preprocessor | None, fill: Any, where: str
) -> float | torch.Tensor:
    """A configured ``fill``, in the units of the raw inputs, in those of the preprocessed
    batches that the augmentations see.

    A number is a raw value (0: black, silence) and ``"mean"`` the training split's mean
    input. Mapped through the fitted preprocessing, it is one sample's worth of values
    (each feature or channel is preprocessed with its own statistics), so a border is what
    augmenting the raw inputs and preprocessing them afterwards would put there.
    """
    if fill == "mean":
        raw = raw_inputs.double().mean(dim=0, keepdim=True)  # (1, ...)
    elif isinstance(fill, int | float) and not isinstance(fill, bool) and math.isfinite(fill):
        if preprocessing is None:
            return float(fill)
        raw = torch.full((1, *raw_inputs.shape[1:]), float(fill), dtype=torch.float64)
    else:
        raise ConfigError(
            f"'{where}' must be a number in the units of the dataset's inputs (0: black, "
            f"silence) or 'mean' (the training split's mean input). Got {fill!r} instead.",
            key=key_of(where),
        )
    if preprocessing is None:
        return raw[0]
    return preprocessing.transform(raw)[0]


def _build_model(config: RunConfig, data: DataSplits, entry_points: dict[str, Any]) -> nn.Module:
    spec = config.model
    if _is_entry_point(spec.name):
        loaded = _entry_point(spec.name, spec.options, entry_points, "train.model.name")
        if loaded.model is None:
            raise ConfigError(
                f"entry point {spec.name} in 'train.model.name' returned no model",
                key=("model", "name"),
            )
        return loaded.model
    if spec.name not in MODELS:
        raise ConfigError(
            unknown_name_message("model", spec.name, "train.model.name", list(MODELS)),
            key=("model", "name"),
        )
    options: dict[str, Any] = {
        key: value
        for key, value in (
            ("depth", spec.depth),
            ("width", spec.width),
            ("kernel_size", spec.kernel_size),
        )
        if value is not None
    }
    options.update(
        activation=spec.activation,
        norm=None if spec.norm in (None, "none") else spec.norm,
        dropout_rate=spec.dropout,
        **spec.options,
    )
    try:
        return build_model(spec.name, data.input_shape, data.output_size, **options)
    except (ValueError, TypeError) as error:
        raise ConfigError(
            f"in 'train.model' for dataset {data.name} with inputs {data.input_shape}: {error}",
            key=argument_key(error, ("model",), _model_arguments(options, spec.options)),
        ) from None


def _model_arguments(options: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, ConfigKey]:
    """The config key of each argument ``build_model`` is given: a setting of the model
    section (``dropout`` as ``dropout_rate``), or one of its ``options``."""
    renamed = {"dropout_rate": "dropout"}
    return {
        name: ("model", "options", name) if name in own else ("model", renamed.get(name, name))
        for name in options
    }


def _initialize(model: nn.Module, config: RunConfig) -> None:
    if config.init.weights == "none":
        return
    weights: Any = config.init.weights
    if config.init.options:
        factory = getattr(init, weights, None) if weights in init.__all__ else None
        if factory is None or not callable(factory):
            raise ConfigError(
                f"'train.init.options' needs 'train.init.weights' to name an initializer of "
                f"gradwise.init (he_normal, normal, ...). Got {weights!r}.",
                key=("init", "options"),
            )
        from gradwise.train._components import construct

        weights = construct(factory, config.init.options, "train.init.options")
    try:
        init.initialize(model, weights, biases=config.init.biases, generator=config.seed)
    except (ValueError, TypeError) as error:
        arguments = {"weights": ("init", "weights"), "biases": ("init", "biases")}
        key = argument_key(error, ("init",), arguments)
        raise ConfigError(f"in 'train.init': {error}", key=key) from None


def _warm_start(model: nn.Module, config: RunConfig, resuming: bool) -> WarmStartReport | None:
    """The warm_start section: load the source's matching weights, then freeze layers."""
    spec = config.warm_start
    if spec is None:
        return None
    if spec.source is None:
        raise ConfigError(
            "'train.warm_start' needs a 'source': a run folder or a .pt file "
            "(e.g. warm_start: {source: runs/mnist5k-cnn2d-20261122-101500}).",
            key=("warm_start", "source"),
        )
    report = None
    if not resuming:  # a resumed run's checkpoint holds the warm-started weights already
        try:
            report = warm_start(model, spec.source, checkpoint=spec.checkpoint, strict=spec.strict)
        except (ValueError, TypeError) as error:
            arguments = {name: ("warm_start", name) for name in ("source", "checkpoint", "strict")}
            key = argument_key(error, ("warm_start",), arguments)
            raise ConfigError(f"in 'train.warm_start': {error}", key=key) from None
    frozen: list[str] = []
    if spec.freeze:
        try:
            frozen = freeze(model, spec.freeze, freeze_statistics=spec.freeze_statistics)
        except (ValueError, TypeError) as error:
            raise ConfigError(
                f"in 'train.warm_start.freeze': {error}", key=("warm_start", "freeze")
            ) from None
    return replace(report, frozen=tuple(frozen)) if report is not None else None


def _apply_ticket(model: nn.Module, config: RunConfig) -> None:
    """The prune section: start from the ticket's weights (if any) with its masks applied."""
    if config.prune is not None:
        from gradwise.prune._config import apply_run_ticket

        with _about(("prune", "ticket")):
            apply_run_ticket(config.prune, model)


def _pruning(prepared: PreparedRun, run: RunFolder | None) -> tuple[list[Callback], dict[str, Any]]:
    """The prune section's callback (keeps the ticket's masks) and its summary fields."""
    if prepared.config.prune is None:
        return [], {}
    from gradwise.prune._config import run_pruning

    with _about(("prune", "ticket")):
        pruning = run_pruning(prepared.config.prune, run)
    return [pruning], {"weights_remaining": pruning.masks.fraction_remaining()}


def _check_distributed(config: RunConfig, optimizer: torch.optim.Optimizer) -> None:
    """The distributed section is consistent: its compression, with its options, fits the
    optimizer, and the scaling rule's ramp has a reference batch.

    A one-process run trains without the section, but checks it all the same: a config
    that ``gradwise train --nproc N`` would refuse is refused with one process too.
    """
    settings = config.distributed
    names = (*COMPRESSIONS, "one_bit_adam")
    if settings.compression not in names:
        raise ConfigError(
            unknown_name_message(
                "compression", settings.compression, "train.distributed.compression", names
            )
            + " (one_bit_adam goes with 'train.optimizer.name: OneBitAdam')",
            key=("distributed", "compression"),
        )
    if settings.scaling_warmup_steps and settings.reference_batch_size is None:
        raise ConfigError(
            f"'train.distributed.scaling_warmup_steps' ({settings.scaling_warmup_steps}) ramps "
            "the lr up to the linear scaling rule's scaled lr, which needs "
            "'train.distributed.reference_batch_size' (the batch size the lr was tuned for); "
            "set it, or set scaling_warmup_steps: 0",
            key=("distributed", "scaling_warmup_steps"),
        )
    check_sync_batch_norm(config)
    if isinstance(optimizer, OneBitAdam):
        _check_one_bit_adam(config)
    elif settings.compression == "one_bit_adam":
        raise ConfigError(
            "'train.distributed.compression: one_bit_adam' needs 'train.optimizer.name: "
            "OneBitAdam' (its step communicates the compressed momentum). Got "
            f"{type(optimizer).__name__}; use OneBitAdam, or another compression",
            key=("distributed", "compression"),
        )
    else:
        try:
            check_compression(
                settings.compression,
                warmup_steps=settings.warmup_steps,
                **settings.compression_options,
            )
        except (ValueError, TypeError) as error:
            arguments = {
                "warmup_steps": ("distributed", "warmup_steps"),
                **{
                    n: ("distributed", "compression_options", n)
                    for n in settings.compression_options
                },
            }
            key = argument_key(error, ("distributed",), arguments)
            raise ConfigError(f"in 'train.distributed': {error}", key=key) from None
        _check_momentum_applied_once(optimizer, settings.compression_options)


def check_sync_batch_norm(config: RunConfig) -> None:
    """Refuse ``distributed.sync_batch_norm`` where the ranks would train on CPUs.

    torch's SyncBatchNorm has kernels for GPUs only (on a CPU tensor its forward raises
    "SyncBatchNorm expected input tensor to be on GPU"), so such a run would fail at its
    first step.
    """
    if config.distributed.sync_batch_norm and rank_device_type(config) != "cuda":
        raise ConfigError(
            "'train.distributed.sync_batch_norm' pools batch-norm statistics with torch's "
            "SyncBatchNorm, which runs on CUDA GPUs only, but this run trains on the CPU "
            f"(train.device: {config.device}). Set 'train.device: cuda' on a machine with "
            "GPUs, or sync_batch_norm: false (each process then normalizes its own shard)",
            key=("distributed", "sync_batch_norm"),
        )


def rank_device_type(config: RunConfig) -> str:
    """Where a distributed run's ranks train: a GPU each for backend nccl or device cuda
    (or auto on a machine with one), the CPU otherwise."""
    if config.distributed.backend == "nccl":
        return "cuda"
    return _device(config.device).type


def _check_one_bit_adam(config: RunConfig) -> None:
    settings = config.distributed
    if settings.compression != "one_bit_adam":
        raise ConfigError(
            "'train.optimizer.name: OneBitAdam' needs 'train.distributed.compression: "
            "one_bit_adam' (its step communicates the compressed momentum). Got compression "
            f"{settings.compression}; set compression: one_bit_adam",
            key=("distributed", "compression"),
        )
    if settings.compression_options:
        raise ConfigError(
            "'train.distributed.compression_options' must be empty with compression "
            "one_bit_adam, which takes no options (1-bit Adam's own settings, such as "
            "freeze_step, go in 'train.optimizer'). Got "
            f"{', '.join(sorted(settings.compression_options))}",
            key=("distributed", "compression_options"),
        )
    if config.clip_grad_norm is not None:
        raise ConfigError(
            f"'train.clip_grad_norm' ({config.clip_grad_norm}) cannot be used with OneBitAdam: "
            "after its freeze_step each process steps with its own local gradient (the "
            "momenta are averaged, not the gradients), so each would clip by its own norm "
            "instead of the batch's. Drop clip_grad_norm, or use Adam or AdamW",
            key=("clip_grad_norm",),
        )


def _check_momentum_applied_once(
    optimizer: torch.optim.Optimizer, options: Mapping[str, Any]
) -> None:
    """The hooks' own momentum (Zheng et al. 2019) replaces the optimizer's: with both, the
    gradient would be averaged twice."""
    hook_momentum = options.get("momentum", 0)
    if not hook_momentum:
        return
    for group in optimizer.param_groups:
        momentum = group.get("momentum", 0)
        beta1 = (group.get("betas") or (0,))[0]
        if not (momentum or beta1):
            continue
        name = type(optimizer).__name__
        if momentum:
            has, fix = f"momentum {momentum}", "Set 'train.optimizer.momentum: 0'"
        else:  # Adam's family: beta1 is its momentum, and it has no momentum key
            has = f"beta1 {beta1} (its momentum, betas[0])"
            fix = "Use 'train.optimizer.name: SGD' with momentum 0"
        raise ConfigError(
            f"'train.distributed.compression_options.momentum' ({hook_momentum}) keeps the "
            f"momentum in the compression hook, so the optimizer must not add its own; "
            f"{name} has {has}. {fix}, or drop the hook's momentum.",
            key=("distributed", "compression_options", "momentum"),
        )


def _linear_scaling(config: RunConfig) -> float:
    """Goyal et al. 2017's linear scaling rule: lr x global batch / reference batch."""
    reference = config.distributed.reference_batch_size
    return 1.0 if reference is None else config.data.batch_size / reference


def _scaled_optimizer(spec: dict[str, Any], scale: float) -> dict[str, Any]:
    if scale == 1.0:
        return spec
    lr = spec.get("lr", 1e-3)
    if not isinstance(lr, int | float) or isinstance(lr, bool):
        raise ConfigError(
            "'train.distributed.reference_batch_size' scales 'train.optimizer.lr', which must "
            f"then be a number. Got {lr!r}.",
            key=("optimizer", "lr"),
        )
    groups = spec.get("groups")
    if isinstance(groups, list):  # a group's own lr scales too (a bad entry fails later)
        groups = [_scaled_group(group, scale) for group in groups]
        return {**spec, "lr": lr * scale, "groups": groups}
    return {**spec, "lr": lr * scale}


def _scaled_group(group: Any, scale: float) -> Any:
    lr = group.get("lr") if isinstance(group, dict) else None
    if not isinstance(lr, int | float) or isinstance(lr, bool):
        return group
    return {**group, "lr": lr * scale}


def _scheduler(
    config: RunConfig,
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    scale: float = 1.0,
    averaging: WeightAverage | None = None,
    plateau_metric: str | None = None,
) -> ScheduleLR | None:
    ramp = config.distributed.scaling_warmup_steps if scale != 1.0 else 0
    swa_lr = config.averaging.swa_lr if config.averaging is not None else None
    swa = averaging if isinstance(averaging, StochasticWeightAverage) else None
    if config.schedule is None and ramp == 0 and (swa is None or swa_lr is None):
        return None
    per_group = []
    for group in optimizer.param_groups:
        lr = float(group["lr"])
        if config.schedule is None:
            schedule: Any = schedules.constant(lr)
        else:
            # The gradual warmup of the scaling rule replaces the schedule's own warmup, and
            # like it comes before the schedule: a decay gets the steps after the ramp.
            warmup = 0.0 if ramp else config.schedule.warmup
            steps = max(total_steps - ramp, 1) if ramp else total_steps
            schedule = build_schedule(
                config.schedule.name, _schedule_options(config, plateau_metric), warmup, lr,
                steps, "train.schedule",
            )  # fmt: skip
        if ramp:
            schedule = schedules.linear_warmup(schedule, num_steps=ramp, start=lr / scale)
        if swa is not None and swa_lr is not None:
            # SWA's rate joins the schedule at its start; a group with its own lr keeps its
            # ratio to the optimizer's lr.
            reference = float(optimizer.defaults.get("lr") or optimizer.param_groups[0]["lr"])
            schedule = swa.schedule(schedule, swa_lr * (lr / reference if reference else 1.0))
        per_group.append(schedule)
    return ScheduleLR(optimizer, per_group)


def _schedule_options(config: RunConfig, plateau_metric: str | None) -> dict[str, Any]:
    """The schedule's constructor options: a plateau's ``metric`` is the Trainer's (see
    :class:`ObservePlateaus`), and it decides the default ``mode`` (an accuracy should
    rise, a loss fall)."""
    assert config.schedule is not None  # noqa: S101 - the caller's branch
    options = dict(config.schedule.options)
    if plateau_metric is not None:
        options.pop("metric", None)
        options.setdefault("mode", "max" if plateau_metric.endswith("accuracy") else "min")
    return options


class ObservePlateaus(Callback):
    """Report an epoch metric to every :class:`~gradwise.schedules.ReduceOnPlateau` in a
    ScheduleLR's schedules (under a warmup too) at each epoch's end, and apply the lr
    they give at once. Their state is the scheduler's (its checkpoint keeps it)."""

    def __init__(self, scheduler: ScheduleLR, metric: str) -> None:
        found = {
            id(part): part
            for schedule in scheduler.schedules
            for part in [schedule, *schedules.stateful_parts(schedule)]
            if isinstance(part, schedules.ReduceOnPlateau)
        }
        self.scheduler = scheduler
        self.metric = metric
        self.plateaus = list(found.values())

    def on_epoch_end(self, state: TrainState) -> None:
        value = state.metrics.get(self.metric)
        if value is None:  # avg_val_* before the first average
            return
        for plateau in self.plateaus:
            plateau.observe(value)
        self.scheduler.refresh()


def _monitor(config: RunConfig, data: DataSplits) -> str:
    monitor = config.checkpoint.monitor
    if data.validation is None and monitor.startswith("val_"):
        return "train_" + monitor.removeprefix("val_")
    if data.task == "regression" and monitor.endswith("accuracy"):
        return monitor.replace("accuracy", "loss")
    return monitor


def _short_name(name: str) -> str:
    stem = Path(name.split(":")[-1]).stem
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in stem)[:24] or "run"


def _metadata(config: RunConfig, prepared: PreparedRun) -> dict[str, Any]:
    optimizer = config.optimizer.get("name") or "chain"
    return {
        "name": config.name,
        "dataset": prepared.data.name,
        "model": config.model.name,
        "optimizer": optimizer,
        "loss": config.loss,
        "seed": config.seed,
        "device": str(prepared.device),
        "total_steps": prepared.total_steps,
        **({"warm_start": prepared.warm_start.to_dict()} if prepared.warm_start else {}),
        **(
            {"preprocessing_warnings": list(prepared.preprocessing_warnings)}
            if prepared.preprocessing_warnings
            else {}
        ),
    }
