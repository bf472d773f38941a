"""The run config's ``prune`` section: a ticket file's masks and start weights for a run."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from gradwise.config import ConfigError
from gradwise.config._schema import PruneConfig
from gradwise.prune._callbacks import Pruning
from gradwise.prune._ticket import Ticket
from gradwise.runs import RunFolder


def load_run_ticket(settings: PruneConfig) -> Ticket:
    """The ticket named by ``train.prune.ticket``; ConfigError if it is missing or bad."""
    if settings.ticket is None:
        raise ConfigError(
            "'train.prune' needs a 'ticket': a ticket file written by gradwise prune or "
            "gradwise.prune.Ticket.save (or set 'train.prune' to null for a dense run)"
        )
    path = Path(settings.ticket)
    if not path.is_file():
        raise ConfigError(f"'train.prune.ticket' is {settings.ticket!r}, which is not a file")
    try:
        return Ticket.load(path)
    except (ValueError, RuntimeError, OSError) as error:
        raise ConfigError(f"in 'train.prune.ticket': {error}") from None


def apply_run_ticket(settings: PruneConfig, model: nn.Module) -> None:
    """Load the ticket's start weights into ``model`` and zero its pruned weights."""
    ticket = load_run_ticket(settings)
    try:
        ticket.apply_(model)
    except ValueError as error:
        raise ConfigError(
            f"the ticket {settings.ticket} does not fit 'train.model': {error}"
        ) from None


def run_pruning(settings: PruneConfig, run: RunFolder | None) -> Pruning:
    """The :class:`Pruning` callback that keeps the ticket's masks through the run."""
    return Pruning(load_run_ticket(settings).masks, run=run)
