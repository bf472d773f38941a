"""``gradwise train --nproc N``: N training processes on this machine, on torch's launcher.

torch's elastic agent (what ``torchrun`` runs) starts the processes, gives each its rank
through the environment, and stops them all when one fails, so a crash on one rank ends
the run promptly instead of leaving the others waiting in a collective.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any


class RankFailed(RuntimeError):
    """A training process failed; the others were stopped. The message names the rank."""


def launch(entrypoint: Callable[..., Any], args: tuple[Any, ...], nproc: int) -> Any:
    """Run ``entrypoint(*args)`` in ``nproc`` processes; returns rank 0's return value.

    Raises:
        RankFailed: a rank raised or died; its error (or exit code) is in the message.
        KeyboardInterrupt: the launcher was interrupted (the ranks were stopped).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
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
    # The agent logs every failure with a traceback of its own machinery; the error
    # raised here says what failed, once.
    agent_log = logging.getLogger("torch.distributed.elastic")
    level = agent_log.level
    agent_log.setLevel(logging.CRITICAL)
    try:
        results = elastic_launch(config, entrypoint)(*args)
    except ChildFailedError as error:
        raise RankFailed(_failure_message(error)) from None
    except SignalException:
        # Ctrl-C or SIGTERM reached the launcher: it has stopped the ranks with SIGTERM,
        # which they take as a request to checkpoint at an agreed step.
        raise KeyboardInterrupt from None
    finally:
        agent_log.setLevel(level)
    return results[0]


def _failure_message(error: Any) -> str:
    rank, failure = error.get_first_failure()
    message = failure.message
    if isinstance(message, dict):
        message = message.get("message", message)
    detail = str(message).strip().splitlines()[-1] if str(message).strip() else ""
    if not detail or detail == "N/A" or "Signal" in detail:
        detail = f"exit code {failure.exitcode}"
        if failure.signal_name() not in ("", "N/A", None):
            detail += f" ({failure.signal_name()})"
    return f"rank {rank} failed: {detail}; the other ranks were stopped"
