"""One rank of a distributed ``gradwise train``: DDP around the configured model.

Runs in every process that ``gradwise train --nproc N`` starts, or that ``torchrun``
starts with ``-m gradwise train``: the environment (RANK, WORLD_SIZE, MASTER_ADDR,
MASTER_PORT, LOCAL_RANK) says where it stands. Every rank builds the same run from the
same config and seed (data, split, model); DistributedDataParallel then broadcasts rank
0's parameters, averages gradients, and each rank trains on its shard of every batch.
Rank 0 alone writes the run folder; a resume reads it on rank 0 and hands it to the rest.
"""

from __future__ import annotations

import gc
import math
import os
import signal
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from gradwise import preprocess
from gradwise.config import ConfigError, RunConfig, config_to_dict, parse_config, read_file
from gradwise.distributed._world import World
from gradwise.runs import RunFolder, RunFolderError, write_config
from gradwise.train._checkpoint import load_checkpoint
from gradwise.train._from_config import (
    PreparedRun,
    _device,
    _fit_and_report,
    check_sync_batch_norm,
    keep_preprocessing_warnings,
    make_trainer,
    prepare_run,
    rank_device_type,
    resumable_folder,
    run_prefix,
    saved_preprocessing,
)
from gradwise.train._trainer import SMALLEST_LAST_BATCH


def in_launched_process() -> bool:
    """Whether this process is a rank of a multi-process launch (torchrun or --nproc)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def check_run(config: RunConfig, *, resuming: bool = False) -> None:
    """Raise the ConfigError every rank would raise building ``config``, before any starts.

    The run is built as one-process ``gradwise train`` builds it (data, model, optimizer),
    but on the CPU, so that the launcher holds no GPU memory while the ranks train (it
    checks the distributed section, compression included, as for one process); the device
    and the backend are then checked as the ranks use them. ``resuming``: as
    :func:`~gradwise.train.prepare_run`'s.
    """
    _device(config.device)  # a missing GPU, as one process reports it
    if _backend(config) == "nccl" and not torch.cuda.is_available():
        raise ConfigError(
            "'train.distributed.backend' is nccl, which needs CUDA GPUs, but none is "
            "available; use gloo or auto"
        )
    # The ranks' device decides whether sync_batch_norm can run (GPUs only): checked here,
    # as the CPU twin below would refuse it.
    check_sync_batch_norm(config)
    unsynced = replace(config.distributed, sync_batch_norm=False)
    on_cpu = replace(config, device="cpu", distributed=unsynced)
    prepare_run(on_cpu, resuming=resuming)


def check_resume(run: str | Path, nproc: int) -> None:
    """Raise what the ranks would find wrong resuming ``run`` in ``nproc`` processes.

    The checks of :func:`~gradwise.train.resume` (a run folder with a checkpoint, not
    finished, whose config builds), and the checkpoint's process count, which a resume
    must keep (each rank restores its own state).

    Raises:
        RunFolderError: no run folder at ``run``, or one written by another process count.
        ConfigError: nothing to resume, or a config that does not build.
    """
    folder = resumable_folder(run)
    # The Trainer's checkpoint holds one entry per rank (a one-process one may hold none).
    written_by = len(load_checkpoint(folder.last_checkpoint).get("ranks") or [None])
    if written_by != nproc:
        raise RunFolderError(
            f"{folder.last_checkpoint} was written by {written_by} process(es); resume it "
            f"with the same number (--nproc {written_by}), not {nproc}."
        )
    check_run(parse_config(read_file(folder.config_path)), resuming=True)


def train_rank(
    config: dict[str, Any] | None,
    resume: str | None = None,
    progress: bool = True,
    announce: str | None = None,
) -> dict[str, Any]:
    """Train as one rank; returns the run's summary (rank 0's is the one that counts).

    Args:
        config: the run config as plain data (None when resuming).
        resume: a run folder to continue (rank 0 must see it).
        progress: show rank 0's progress bar.
        announce: a file where rank 0 writes the run folder's path once it exists, so
            the launcher can name it if a rank fails.
    """
    sees_run = True
    if resume is not None:
        # Rank 0's copy decides (it is broadcast below); another machine that cannot see
        # the run folder starts from the defaults until then, which only pick the backend
        # and the device (checked against the run's once it arrives).
        saved = Path(resume) / "config.yaml"
        sees_run = saved.is_file()
        config = read_file(saved) if sees_run else None
    settings = _settings(config)
    backend = _backend(settings)
    # Before the first collective: nccl sends from the current GPU, and without this every
    # rank would use GPU 0 ("Duplicate GPU detected" at the config's broadcast).
    device = _rank_device(settings)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(seconds=settings.distributed.timeout_s))
    world = World.current()
    try:
        settings = parse_config(world.broadcast(config_to_dict(settings)))
        if not sees_run:
            _check_defaults_chose_as_the_run(settings, backend, device, resume)
        return _train(settings, device, world, resume, progress, announce)
    finally:
        # The DDP model holds the process group; let it go first, so that gloo's threads
        # end here and not at interpreter exit, where a thread still holding work aborts
        # the process (SIGABRT after a finished run; pytorch PR 179291 describes it).
        gc.collect()
        dist.destroy_process_group()


def train_launched_rank(
    config: dict[str, Any] | None,
    resume: str | None = None,
    progress: bool = True,
    announce: str | None = None,
) -> dict[str, Any]:
    """:func:`train_rank` as a rank of ``gradwise train --nproc`` (torch's elastic agent,
    one process per rank, started by spawn).

    When a stop signal interrupted the run (Ctrl-C or SIGTERM reached the launcher, whose
    agent stops the ranks with SIGTERM), the rank checkpoints, then ends by SIGTERM's
    default action, as a process that handled a signal for its clean-up does: the
    agent's workers otherwise wait for it to read their return values, which a stopping
    agent never does, and it killed them only after its 30-second grace period.
    """
    summary = train_rank(config, resume, progress, announce)
    if summary.get("status") == "interrupted":
        sys.stdout.flush()
        sys.stderr.flush()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
    return summary


def _train(
    settings: RunConfig,
    device: torch.device,
    world: World,
    resume: str | None,
    progress: bool,
    announce: str | None,
) -> dict[str, Any]:
    """The body of :func:`train_rank` between the process group's creation and its end
    (``settings``: rank 0's)."""
    # Rank 0 reads the run's preprocessing and hands it to the others, as it does the
    # checkpoint: other machines need not see the run folder.
    saved = None
    if resume is not None:
        saved = world.broadcast(
            saved_preprocessing(RunFolder.open(resume)) if world.is_main else None
        )
    prepared = prepare_run(
        replace(settings, device=str(device.type)),
        resuming=resume is not None,
        preprocessing=saved,
    )
    synced = settings.distributed.sync_batch_norm
    _check_batch_norm_shards(prepared, world, synced=synced)
    if synced:
        prepared.model = sync_batch_norm(prepared.model)
    prepared.device = device
    prepared.model = prepared.model.to(device)
    model = DistributedDataParallel(
        prepared.model,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=settings.distributed.find_unused_parameters,
    )
    compression = _register_compression(model, prepared.optimizer, settings)
    folder = _folder(settings, world, resume)
    if world.is_main and announce is not None:
        Path(announce).write_text(str(folder.path))
    if world.is_main and resume is None:
        if prepared.preprocessing is not None:
            preprocess.save(prepared.preprocessing, folder.preprocess_path)
        prepared.warn_preprocessing()  # once, although every rank (and the launcher) fitted it
    elif world.is_main:
        keep_preprocessing_warnings(prepared, folder)
    prepared.config = replace(settings, name=folder.path.name)
    prepared.model = model
    trainer = make_trainer(
        prepared,
        folder,
        progress=progress and world.is_main,
        world=world,
        rank_state=compression,
    )
    try:
        if world.is_main:
            result = _fit_and_report(trainer, folder, resume is not None)
        else:
            result = trainer.fit(resume=resume is not None)
    except RuntimeError as error:
        unused = "find_unused_parameters" in str(error)
        if not unused or settings.distributed.find_unused_parameters:
            raise
        # DDP's advice names its own keyword argument; a config says it differently.
        raise RuntimeError(
            "a parameter of the model received no gradient (forward did not use it); set "
            "'train.distributed.find_unused_parameters: true' for such a model. DDP says: "
            f"{error}"
        ) from error
    dist.barrier()
    return {
        "summary": result.summary,
        "status": result.status,
        "run": str(folder.path),
        "bytes_sent": _bytes_sent(compression, prepared, result.steps),
    }


def sync_batch_norm(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with each batch-norm layer that normalizes with batch statistics in training
    made a :class:`torch.nn.SyncBatchNorm`, which pools those statistics over the ranks.

    Each new layer holds the old one's parameters and buffers (the same tensors: an optimizer
    built on the model keeps stepping them) and its hooks, so its state dict is a batch
    norm's and checkpoints load into a one-process model. A layer that
    ``warm_start``'s ``freeze_statistics`` keeps on its stored statistics is left as it is
    (it computes no batch statistics to pool; torch's ``convert_sync_batchnorm`` would
    also drop the hook that freezes it). Returns the converted model (a batch-norm layer
    given as the whole model is replaced, not changed).
    """
    if _batch_norm(model):
        return _synced(model)
    for name, child in model.named_children():
        converted = sync_batch_norm(child)
        if converted is not child:
            setattr(model, name, converted)
    return model


def _synced(layer: torch.nn.Module) -> torch.nn.Module:
    synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(layer)
    # The same dictionaries, so the handles that registered the hooks still remove them.
    synced._forward_pre_hooks = layer._forward_pre_hooks
    synced._forward_hooks = layer._forward_hooks
    synced._backward_hooks = layer._backward_hooks
    return synced


def _rank_device(config: RunConfig) -> torch.device:
    """This rank's device, made the current GPU: the GPU numbered by its rank on this
    machine (LOCAL_RANK) when the ranks train on GPUs, else the CPU."""
    if rank_device_type(config) != "cuda":
        return torch.device("cpu")
    local_rank, count = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
    if local_rank >= count:
        raise ConfigError(
            f"process {os.environ.get('RANK', local_rank)} is number {local_rank} on its "
            f"machine, which has {count} GPU(s): each process needs its own. Start at most "
            f"{count} process(es) per machine (--nproc, or torchrun's --nproc-per-node), or "
            "train on the CPU ('train.device: cpu' with backend gloo or auto)"
        )
    device = torch.device("cuda", local_rank)
    torch.cuda.set_device(device)
    return device


def _check_batch_norm_shards(prepared: PreparedRun, world: World, *, synced: bool) -> None:
    """Refuse a run in which batch norm would normalize fewer than 2 samples.

    In training, each rank's batch-norm layers normalize its own shard of the batch, and
    torch cannot normalize 1 sample per channel ("Expected more than 1 value per channel").
    A batch of ``c`` samples gives some rank ``c // W`` samples, so every batch the run
    draws must hold ``2 W`` or more. ``synced`` (SyncBatchNorm) pools the shards: then the
    whole batch must hold 2 (torch raises nothing there, but the running variance of one
    sample divides by 0). A last batch of 1 sample is never drawn (the Trainer drops it).
    """
    layers = [name for name, module in prepared.model.named_modules() if _batch_norm(module)]
    if not world.is_distributed or not layers:
        return
    samples, batch_size = len(prepared.data.train), prepared.config.data.batch_size
    last = samples % batch_size
    smallest, which = min(batch_size, samples), "each batch"
    drawn = last >= SMALLEST_LAST_BATCH and batch_size < samples
    if drawn and prepared.total_steps >= math.ceil(samples / batch_size):
        smallest = last
        which = (
            f"the last batch of each epoch ({samples} training samples, batch_size {batch_size})"
        )
    least = 2 if synced else 2 * world.size
    if smallest >= least:
        return
    fits = _batch_sizes_that_fit(samples, least, batch_size)
    fixes = [f"batch_size {fits} (every batch then holds {least} or more)"] if fits else []
    layer = f"layer {layers[0]!r}{' and more' if len(layers) > 1 else ''}"
    other_norm = "or 'train.model.norm: layer' (or group, none)"
    if synced:
        raise ConfigError(
            f"the model has batch norm ({layer}), synchronized over the processes, but "
            f"{which} holds {smallest} sample, and batch norm needs 2 or more in training. "
            f"Use {', '.join([*fixes, other_norm])}"
        )
    fixes += ["fewer processes", other_norm]
    raise ConfigError(
        f"the model has batch norm ({layer}), "
        f"which each of the {world.size} processes applies to its own shard of the batch, "
        f"but {which} holds {smallest} sample(s), so a process gets fewer than 2 of them, "
        f"and batch norm needs 2 or more per process in training. Use {', '.join(fixes)}"
    )


def _batch_norm(module: torch.nn.Module) -> bool:
    """A batch-norm layer that normalizes with the batch's statistics in training (not one
    that warm_start's freeze_statistics keeps on its stored statistics)."""
    from gradwise.train._warm_start import _use_running_statistics

    is_batch_norm = isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
    return is_batch_norm and _use_running_statistics not in module._forward_pre_hooks.values()


def _batch_sizes_that_fit(samples: int, least: int, near: int) -> int | None:
    """The batch size closest to ``near`` whose batches all hold ``least`` samples or more."""
    for distance in range(samples):
        for size in (near - distance, near + distance):
            last = samples % size  # 0: none; 1 sample: dropped
            if least <= size <= samples and (last < SMALLEST_LAST_BATCH or last >= least):
                return size
    return None


def _bytes_sent(compression: Any, prepared: PreparedRun, steps: int) -> int:
    """Gradient bytes this rank sent (the hooks count; plain DDP: 4 bytes per element)."""
    from gradwise.distributed import OneBitAdam

    if isinstance(prepared.optimizer, OneBitAdam):  # 1-bit Adam sends in its step
        return int(prepared.optimizer.bytes_sent)
    if compression is not None:
        return int(compression.bytes_sent)
    elements = sum(p.numel() for p in prepared.model.parameters() if p.requires_grad)
    return 4 * elements * steps


def _check_defaults_chose_as_the_run(
    run: RunConfig, backend: str, device: torch.device, resume: str | None
) -> None:
    """On a machine that cannot see the run folder being resumed, the defaults picked the
    backend and the device before rank 0's config arrived: they must be the run's."""
    wanted_backend, wanted_device = _backend(run), rank_device_type(run)
    if (wanted_backend, wanted_device) != (backend, device.type):
        raise ConfigError(
            f"this machine cannot see {resume}/config.yaml, so it chose the backend and the "
            f"device from the defaults ({backend}, {device.type}) before rank 0 sent the "
            f"run's config, which trains with {wanted_backend} on {wanted_device}. Copy the "
            "run's config.yaml to the same path on this machine (the checkpoint and the "
            "preprocessing are sent by rank 0)."
        )


def _settings(config: dict[str, Any] | None) -> RunConfig:
    return parse_config(config or {})


def _backend(config: RunConfig) -> str:
    backend = config.distributed.backend
    if backend == "auto":
        return "nccl" if rank_device_type(config) == "cuda" else "gloo"
    return backend


def _register_compression(
    model: DistributedDataParallel, optimizer: torch.optim.Optimizer, config: RunConfig
) -> Any:
    settings = config.distributed
    from gradwise.distributed import OneBitAdam, register_compression, register_one_bit_adam

    # prepare_run checked the settings (_check_distributed): they fit the optimizer.
    if isinstance(optimizer, OneBitAdam):
        return register_one_bit_adam(model, optimizer)
    if settings.compression == "none":
        return None
    return register_compression(
        model,
        settings.compression,
        warmup_steps=settings.warmup_steps,
        **settings.compression_options,
    )


def _folder(config: RunConfig, world: World, resume: str | None) -> RunFolder:
    """Rank 0 makes (or opens) the run folder and tells the others its path."""
    path = None
    if world.is_main:
        if resume is not None:
            folder = RunFolder.open(resume)
        else:
            prefix = run_prefix(config)
            folder = RunFolder.create(config.runs_dir, config.name, prefix=prefix)
            write_config(folder, config_to_dict(replace(config, name=folder.path.name)))
        path = str(folder.path)
    return RunFolder(world.broadcast(path))
