"""The run folder: one place on disk for everything a training run writes."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, final

from gradwise._validation import (
    NON_NEGATIVE_INT,
    Boolean,
    Either,
    Satisfies,
    check,
    check_all,
)
from gradwise.runs._files import RunFolderError, describe_os_error, remove_leftover_temporaries

#: What :meth:`RunFolder.create` asks to be free on the disk, by default: 100 MB.
DEFAULT_MIN_FREE_BYTES = 100 * 10**6

PathLike = str | os.PathLike[str]

_PATH = Satisfies(lambda value: isinstance(value, str | os.PathLike), "a str or a path")


def _is_folder_name(value: Any) -> bool:
    return (
        isinstance(value, str)
        and value not in ("", ".", "..")
        and "/" not in value
        and os.sep not in value
        and "\0" not in value
    )


_FOLDER_NAME = Satisfies(_is_folder_name, "a non-empty folder name without '/'")
_OPTIONAL_FOLDER_NAME = Either((Satisfies(lambda value: value is None, "None"), _FOLDER_NAME))


@final
@dataclass(frozen=True)
class RunFolder:
    """The folder of one run, ``runs/<name>/``, and the fixed names of the files in it.

    ========================  =========================================================
    ``config.yaml``           the resolved config (:func:`write_config`)
    ``metrics.jsonl``         one JSON object per line (:class:`MetricsLog`)
    ``summary.json``          the run's summary (:func:`write_summary`, atomic)
    ``checkpoints/last.pt``   the latest checkpoint (the trainer writes it atomically)
    ``checkpoints/best.pt``   the checkpoint with the best monitored validation metric
    ``tensorboard/``          TensorBoard event files
    ``report.html``           the self-contained report (``gradwise.report.build_report``)
    ``preprocess.npz``        the fitted preprocessing
    ========================  =========================================================

    Make a new one with :meth:`create` (which checks that the disk can take a run before
    training starts) and open an existing one with :meth:`open`. The constructor only
    records the path.

    Args:
        path: the run folder.

    Example:
        >>> import tempfile
        >>> from gradwise.runs import RunFolder
        >>> root = tempfile.mkdtemp()
        >>> run = RunFolder.create(root, "demo", min_free_bytes=0)
        >>> run.name, run.metrics_path.name, run.best_checkpoint.parent.name
        ('demo', 'metrics.jsonl', 'checkpoints')
    """

    path: Path

    def __post_init__(self) -> None:
        check("path", "RunFolder", self.path, _PATH)
        object.__setattr__(self, "path", Path(self.path))

    @property
    def name(self) -> str:
        """The folder's name, which names the run."""
        return self.path.name

    @property
    def config_path(self) -> Path:
        """``config.yaml``: the resolved config."""
        return self.path / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        """``metrics.jsonl``: step, epoch and test records, one JSON object per line."""
        return self.path / "metrics.jsonl"

    @property
    def summary_path(self) -> Path:
        """``summary.json``: status, best and final metrics."""
        return self.path / "summary.json"

    @property
    def checkpoint_dir(self) -> Path:
        """``checkpoints/``."""
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        """``checkpoints/last.pt``: the latest checkpoint, which a resumed run loads."""
        return self.checkpoint_dir / "last.pt"

    @property
    def best_checkpoint(self) -> Path:
        """``checkpoints/best.pt``: the checkpoint with the best monitored metric."""
        return self.checkpoint_dir / "best.pt"

    @property
    def tensorboard_dir(self) -> Path:
        """``tensorboard/``: TensorBoard event files."""
        return self.path / "tensorboard"

    @property
    def report_path(self) -> Path:
        """``report.html``."""
        return self.path / "report.html"

    @property
    def preprocess_path(self) -> Path:
        """``preprocess.npz``: the fitted preprocessing."""
        return self.path / "preprocess.npz"

    @property
    def findings_path(self) -> Path:
        """``findings.jsonl``: the training doctor's findings, one JSON object per line."""
        return self.path / "findings.jsonl"

    @property
    def probes_path(self) -> Path:
        """``probes.jsonl``: per-layer monitor measurements, one record per layer and probe."""
        return self.path / "probes.jsonl"

    @property
    def histograms_path(self) -> Path:
        """``histograms.jsonl``: activation and gradient histograms per layer and probe."""
        return self.path / "histograms.jsonl"

    @property
    def checks_path(self) -> Path:
        """``checks.json``: the gradient check and sanity check tables of ``gradwise doctor``."""
        return self.path / "checks.json"

    @classmethod
    def create(
        cls,
        root: PathLike = "runs",
        name: str | None = None,
        *,
        prefix: str = "run",
        exist_ok: bool = False,
        min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
    ) -> RunFolder:
        """Make the folder ``root/name`` (and ``checkpoints/`` in it) and check it is usable.

        Without a name the run is called ``<prefix>-<YYYYmmdd-HHMMSS>`` (local time), with
        ``-2``, ``-3``, ... appended when that folder exists already; the name is claimed
        with an atomic ``mkdir``, so two runs started in the same second get different
        folders. Then :meth:`check_writable` runs; if it fails, a folder made here is
        removed again and nothing is left behind.

        Args:
            root: the folder that holds the runs; made if missing. Default ``"runs"``.
            name: the run's folder name; default a timestamp-based unique name.
            prefix: the start of a generated name, e.g. ``"mnist1d-cnn1d"``.
            exist_ok: reuse an existing ``root/name`` (to resume) instead of failing.
            min_free_bytes: the free space the disk must have, an int >= 0; default
                100 MB.

        Raises:
            RunFolderError: the folder exists (and ``exist_ok`` is false), cannot be made
                or written, or the disk has less than ``min_free_bytes`` free.

        Example:
            >>> import tempfile
            >>> from gradwise.runs import RunFolder
            >>> root = tempfile.mkdtemp()
            >>> run = RunFolder.create(root, prefix="mnist1d-cnn1d", min_free_bytes=0)
            >>> run.name.startswith("mnist1d-cnn1d-20")
            True
        """
        check("root", "RunFolder.create", root, _PATH)
        check("name", "RunFolder.create", name, _OPTIONAL_FOLDER_NAME)
        check_all(
            "RunFolder.create",
            {"prefix": prefix, "exist_ok": exist_ok, "min_free_bytes": min_free_bytes},
            {
                "prefix": _FOLDER_NAME,
                "exist_ok": Boolean(),
                "min_free_bytes": NON_NEGATIVE_INT,
            },
        )
        root = Path(root)
        _make_root(root)
        if name is None:
            path = _claim_unique(root, f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}")
            made = True
        else:
            path = root / name
            made = _claim(path, exist_ok)
        run = cls(path)
        try:
            _make_checkpoint_dir(run)
            run.check_writable(int(min_free_bytes))
        except BaseException:
            if made:
                _remove_if_fresh(run)
            raise
        return run

    @classmethod
    def open(cls, path: PathLike) -> RunFolder:
        """The existing run folder at ``path``.

        Raises:
            RunFolderError: ``path`` does not exist or is not a run folder (it has no
                ``config.yaml``).

        Example:
            >>> import tempfile
            >>> from gradwise.runs import RunFolder, write_config
            >>> run = RunFolder.create(tempfile.mkdtemp(), "demo", min_free_bytes=0)
            >>> write_config(run, {"model": "mlp"})
            >>> RunFolder.open(run.path) == run
            True
        """
        check("path", "RunFolder.open", path, _PATH)
        run = cls(Path(path))
        if not run.path.is_dir():
            what = "it is a file" if run.path.exists() else "the folder does not exist"
            raise RunFolderError(
                f"No run folder at {run.path}: {what}. Run 'gradwise runs' to list the runs."
            )
        if not run.config_path.is_file():
            raise RunFolderError(
                f"{run.path} is not a run folder: it has no config.yaml. "
                "Pass the folder of a run, e.g. runs/<name>."
            )
        return run

    def remove_leftover_temporaries(self) -> list[Path]:
        """Remove the temporary files that writes killed mid-way left; return their paths.

        A checkpoint, summary or metrics rewrite goes to a hidden temporary file that is
        renamed over the real one (:func:`gradwise.runs.replace_atomically`); a SIGKILL or
        power loss mid-write leaves that ``.<name>.<random>.tmp`` behind, as large as a
        checkpoint for ``checkpoints/``. This removes the ones of the files the training
        process writes: everything in ``checkpoints/``, and ``config.yaml``,
        ``metrics.jsonl``, ``summary.json``, ``findings.jsonl``, ``probes.jsonl`` and
        ``histograms.jsonl``. ``report.html`` and ``checks.json``, which other commands
        (``gradwise report``, ``gradwise doctor``) may be writing meanwhile, are left alone.

        A live writer's temporary file looks the same: call this only from the run's one
        writer, before it writes (the Trainer does when a fit starts or resumes).

        Example:
            >>> import tempfile
            >>> from gradwise.runs import RunFolder
            >>> run = RunFolder.create(tempfile.mkdtemp(), "demo", min_free_bytes=0)
            >>> leftover = run.checkpoint_dir / ".last.pt.k2x8_q0z.tmp"
            >>> _ = leftover.write_bytes(b"half a checkpoint")
            >>> [path.name for path in run.remove_leftover_temporaries()]
            ['.last.pt.k2x8_q0z.tmp']
        """
        written_by_the_run = {
            path.name
            for path in (
                self.config_path,
                self.metrics_path,
                self.summary_path,
                self.findings_path,
                self.probes_path,
                self.histograms_path,
            )
        }
        return [
            *remove_leftover_temporaries(self.path, written_by_the_run),
            *remove_leftover_temporaries(self.checkpoint_dir),
        ]

    def check_writable(self, min_free_bytes: int = DEFAULT_MIN_FREE_BYTES) -> None:
        """Fail now, with one clear line, if a run cannot write here.

        Writes and fsyncs a small probe file, removes it, and checks with
        ``shutil.disk_usage`` that at least ``min_free_bytes`` are free. A resumed run
        should call it before training, as :meth:`create` does.

        Raises:
            RunFolderError: the folder cannot be written, or the disk is too full.
        """
        check("min_free_bytes", "RunFolder.check_writable", min_free_bytes, NON_NEGATIVE_INT)
        probe = self.path / f".write-probe-{os.getpid()}"
        try:
            with open(probe, "wb") as file:
                file.write(b"gradwise write probe\n")
                file.flush()
                os.fsync(file.fileno())
            probe.unlink()
            free = shutil.disk_usage(self.path).free
        except OSError as error:
            with contextlib.suppress(OSError):
                probe.unlink()
            raise _unwritable(self.path, error) from error
        if free < int(min_free_bytes):
            raise RunFolderError(
                f"Only {format_bytes(free)} free on the disk holding {self.path}; a run "
                f"needs at least {format_bytes(int(min_free_bytes))} (checkpoints and metrics). "
                "Free space or choose another folder."
            )


def format_bytes(count: int) -> str:
    """A byte count in decimal units, as ``df -H`` prints them: ``3.1 MB``, ``200 MB``.

    One decimal below 10 of a unit, none from 10; a count that rounds to 1000 of a unit
    is shown in the next one (``999_999`` is ``1.0 MB``, not ``1000 kB``).
    """
    if count < 1000:
        return f"{count} B"
    value = count / 1000
    for unit in ("kB", "MB", "GB", "TB"):
        text = _rounded(value)
        if float(text) < 1000:
            return f"{text} {unit}"
        value /= 1000
    return f"{_rounded(value)} PB"


def _rounded(value: float) -> str:
    """One decimal below 10, none from 10, judged after rounding (9.96 is 10, not 10.0)."""
    text = f"{value:.1f}"
    return text if float(text) < 10 else f"{value:.0f}"


def _unwritable(path: Path, error: OSError) -> RunFolderError:
    return RunFolderError(
        f"Cannot write to run folder {path}: {describe_os_error(error)}. "
        "Choose another folder with --runs-dir or fix its permissions."
    )


def check_runs_dir(root: PathLike) -> None:
    """Fail now, with one clear line, if :meth:`RunFolder.create` could not make run folders
    in ``root``: it, or a folder above it, is a file, or cannot be written. Makes nothing,
    so a command checking before its work leaves nothing behind if it is refused or
    interrupted later.

    Raises:
        RunFolderError: naming the ``runs_dir`` setting (the run config's) and the problem.
    """
    root = Path(root)
    problem = _runs_dir_problem(root)
    if problem is not None:
        raise _unusable_runs_dir(root, problem)


def _runs_dir_problem(root: Path) -> str | None:
    """Why run folders cannot be made in ``root``, judged by its nearest existing folder."""
    existing = next((folder for folder in (root, *root.parents) if folder.exists()), None)
    if existing is None:
        return None  # nothing exists above it, not even the current folder: let mkdir say
    if not existing.is_dir():
        return "it is a file" if existing == root else f"{str(existing)!r} is a file"
    if not os.access(existing, os.W_OK | os.X_OK):
        return "permission denied" if existing == root else f"{str(existing)!r} cannot be written"
    return None


def _unusable_runs_dir(root: Path, problem: str) -> RunFolderError:
    remedy = "move that file" if problem.endswith("is a file") else "fix its permissions"
    return RunFolderError(
        f"The 'runs_dir' setting must be a folder that can be written. Got {str(root)!r} "
        f"instead: {problem}. Set runs_dir to another folder, or {remedy}."
    )


def _make_root(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        problem = _runs_dir_problem(root) or f"cannot make it ({describe_os_error(error)})"
        raise _unusable_runs_dir(root, problem) from error


def _claim(path: Path, exist_ok: bool) -> bool:
    """mkdir ``path``; True if this call made it."""
    try:
        path.mkdir()
    except FileExistsError as error:
        if exist_ok and path.is_dir():
            return False
        raise RunFolderError(
            f"Run folder {path} already exists. Choose another name, or resume that run."
        ) from error
    except OSError as error:
        raise _unwritable(path, error) from error
    return True


def _claim_unique(root: Path, base: str) -> Path:
    for attempt in range(1, 10_000):
        path = root / (base if attempt == 1 else f"{base}-{attempt}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as error:
            raise _unwritable(path, error) from error
        return path
    raise RunFolderError(  # pragma: no cover - needs 10,000 runs started in one second
        f"Cannot find a free run name {base}-N in {root}. Pass a name."
    )


def _make_checkpoint_dir(run: RunFolder) -> None:
    try:
        run.checkpoint_dir.mkdir(exist_ok=True)
    except OSError as error:
        raise _unwritable(run.path, error) from error


def _remove_if_fresh(run: RunFolder) -> None:
    with contextlib.suppress(OSError):
        run.checkpoint_dir.rmdir()
        run.path.rmdir()
