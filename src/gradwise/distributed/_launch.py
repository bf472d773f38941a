"""``gradwise train --nproc N``: N training processes on this machine, on torch's launcher.

torch's elastic agent (what ``torchrun`` runs) starts the processes, gives each its rank
through the environment, and stops them all when one fails, so a crash on one rank ends
the run promptly instead of leaving the others waiting in a collective.
"""

from __future__ import annotations

import logging
import re
import signal
import tempfile
import threading
import uuid
from collections.abc import Callable
from typing import Any


class RankFailed(RuntimeError):
    """A training process failed; the others were stopped. The message names the rank.

    Attributes:
        error_type: the class name of the exception the rank raised (``"ConfigError"``),
            or None when it died without one (a signal, an exit code).
        error: that exception's message (a later line indented under the first), or the
            exit code (and signal) it died with.
    """

    def __init__(self, rank: int, error_type: str | None, error: str) -> None:
        what = f"{error_type}: {error}" if error_type else error
        super().__init__(f"rank {rank} failed (the other ranks were stopped): {what}")
        self.error_type = error_type
        self.error = error


def launch(entrypoint: Callable[..., Any], args: tuple[Any, ...], nproc: int) -> Any:
    """Run ``entrypoint(*args)`` in ``nproc`` processes; returns rank 0's return value.

    Raises:
        RankFailed: a rank raised or died; its error (or exit code) is in the message.
        KeyboardInterrupt: the launcher was interrupted (the ranks were stopped).
    """
    # torch's agent otherwise leaves a torchelastic_* folder in the temp dir per launch.
    with tempfile.TemporaryDirectory(prefix="gradwise-launch-") as log_dir:
        return _launch(entrypoint, args, nproc, log_dir)


def _launch(entrypoint: Callable[..., Any], args: tuple[Any, ...], nproc: int, log_dir: str) -> Any:
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        logs_specs=DefaultLogsSpecs(log_dir=log_dir),
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=f"gradwise-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",
        max_restarts=0,
        monitor_interval=0.2,
        start_method="spawn",
    )
    # The agent logs every failure with a traceback of its own machinery, and torch's
    # process context a warning for each rank it stops; the error raised here says what
    # failed, once.
    logs = _agent_loggers()
    levels = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.CRITICAL)
    # torch's process context installs its own handler for these and leaves it there: a
    # later Ctrl-C in this process (a notebook, a script that goes on) raised torch's
    # SignalException instead of KeyboardInterrupt.
    handlers = {signum: signal.getsignal(signum) for signum in _AGENT_SIGNALS}
    try:
        results = elastic_launch(config, entrypoint)(*args)
    except ChildFailedError as error:
        raise _rank_failed(error) from None
    except SignalException:
        # Ctrl-C or SIGTERM reached the launcher: it has stopped the ranks with SIGTERM,
        # which they take as a request to checkpoint at an agreed step.
        raise KeyboardInterrupt from None
    finally:
        for log, level in zip(logs, levels, strict=True):
            log.setLevel(level)
        if threading.current_thread() is threading.main_thread():
            for signum, handler in handlers.items():
                if handler is not None:  # None: set outside Python, left as it is
                    signal.signal(signum, handler)
    return results[0]


_AGENT_LOGS = ("torch.distributed.elastic", "torch.multiprocessing.spawn")


def _agent_loggers() -> list[logging.Logger]:
    """The loggers of torch's agent and process context: the two above and every one
    below them. torch gives most of its modules' loggers a level of their own
    (``LOGLEVEL``, WARNING by default), so the parents' level alone does not silence
    them: the agent's "Received 2 death signal, shutting down workers" still printed."""
    prefixes = tuple(f"{name}." for name in _AGENT_LOGS)
    below = [
        logger
        for name, logger in list(logging.root.manager.loggerDict.items())
        if name.startswith(prefixes) and isinstance(logger, logging.Logger)
    ]
    return [logging.getLogger(name) for name in _AGENT_LOGS] + below


# The signals torch's process context takes over (TORCHELASTIC_SIGNALS_TO_HANDLE's default).
_AGENT_SIGNALS = tuple(
    getattr(signal, name)
    for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT")
    if hasattr(signal, name)
)
# The lines of a rank's error message that a failure keeps (DDP's longest: about 8).
_MOST_LINES = 20

# How torch's error handler records a rank's exception: "<class name>: <message>".
_RAISED = re.compile(r"(?P<type>[A-Za-z_][A-Za-z0-9_.]*): (?P<message>.*)", re.DOTALL)


def _rank_failed(error: Any) -> RankFailed:
    rank, failure = error.get_first_failure()
    message = failure.message
    if isinstance(message, dict):
        message = message.get("message", message)
    text = str(message).strip()
    raised = _RAISED.fullmatch(text)
    if raised is not None:
        return RankFailed(rank, raised["type"], _indented(raised["message"]))
    detail = text.splitlines()[-1] if text else ""
    if not detail or detail == "N/A" or "Signal" in detail:
        detail = f"exit code {failure.exitcode}"
        if failure.signal_name() not in ("", "N/A", None):
            detail += f" ({failure.signal_name()})"
    return RankFailed(rank, None, detail)


def _indented(message: str, most: int = _MOST_LINES) -> str:
    """A message of several lines as its first line, then the others indented under it
    (the first usually says what went wrong, as DDP's errors do; the rest says why)."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if len(lines) > most:
        lines = [*lines[: most - 1], f"... ({len(lines) - most + 1} more lines)"]
    return "\n".join([*lines[:1], *(f"  {line}" for line in lines[1:])])
