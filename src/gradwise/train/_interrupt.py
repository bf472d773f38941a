"""Ctrl-C as a request: the trainer finishes the step, checkpoints, and returns."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class InterruptFlag:
    """Set by the first SIGINT; a second SIGINT raises KeyboardInterrupt at once (another
    of the block's signals after the first only sets it again)."""

    def __init__(self) -> None:
        self.requested = False


class _StopRequests:
    """The signals of a :func:`stop_requests` block, and those it received so far."""

    def __init__(self, signals: tuple[signal.Signals, ...]) -> None:
        self.signals = signals
        self.received: set[int] = set()


# The process's stop_requests block (signals reach the main thread alone, so one is enough).
_STOP_REQUESTS: _StopRequests | None = None


@contextmanager
def stop_requests(
    signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM),
) -> Iterator[None]:
    """Within this block, ``signals`` are one stop request for the whole process.

    The first of them raises KeyboardInterrupt (or, inside a :func:`graceful_interrupt`
    block, sets its flag: the trainer stops after the current step, with a checkpoint);
    the same signal again raises it at once; another of them after the first is the same
    request, and does nothing more.

    A search worker runs in this block: a terminal's Ctrl-C reaches it (SIGINT to the
    whole process group) and so does ``gradwise search``, which stops its workers with
    SIGTERM; taken as a second Ctrl-C, the SIGTERM raised KeyboardInterrupt inside an
    optimizer step, and the trial lost its steps since its last checkpoint. Outside the
    main thread signals cannot be caught, and the block changes nothing; nested in another,
    it is part of that one.
    """
    global _STOP_REQUESTS
    if threading.current_thread() is not threading.main_thread() or _STOP_REQUESTS is not None:
        yield  # nested: the outer block's request is this one
        return
    requests = _StopRequests(signals)

    def on_stop(signum: int, frame: FrameType | None) -> None:
        first, again = not requests.received, signum in requests.received
        requests.received.add(signum)
        if first or again:
            raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, on_stop) for signum in signals}
    _STOP_REQUESTS = requests
    try:
        yield
    finally:
        _STOP_REQUESTS = None
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def graceful_interrupt(
    signals: tuple[signal.Signals, ...] = (signal.SIGINT,),
) -> Iterator[InterruptFlag]:
    """Within this block the first Ctrl-C (or other of ``signals``) only sets ``flag.requested``.

    A distributed rank also takes SIGTERM this way: torch's launcher stops its ranks with
    SIGTERM when it is interrupted, and the ranks then agree on a step to stop at and
    checkpoint it. Inside a :func:`stop_requests` block (a search worker), its signals
    count too, and with those the block received before this one.

    Stopping between steps, never inside one, is what makes the checkpoint written on
    Ctrl-C consistent: a KeyboardInterrupt raised inside ``optimizer.step()`` could leave
    half the parameters updated. Outside the main thread signals cannot be caught, and the
    flag simply never gets set.
    """
    flag = InterruptFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    received: set[int] = set()
    outer = _STOP_REQUESTS
    if outer is not None:
        signals = tuple(dict.fromkeys((*signals, *outer.signals)))
        received = outer.received
        flag.requested = bool(received)  # a stop requested before: stop after one step

    def on_interrupt(signum: int, frame: FrameType | None) -> None:
        # Only the same signal again is a second Ctrl-C. A terminal's Ctrl-C reaches the
        # launcher and every rank (SIGINT), and the launcher then stops the ranks with
        # SIGTERM: taken as a second request, it raised mid-run, and the run ended
        # "failed" with the steps since its last checkpoint lost.
        if signum in received:
            raise KeyboardInterrupt
        received.add(signum)
        flag.requested = True

    previous = {signum: signal.signal(signum, on_interrupt) for signum in signals}
    try:
        yield flag
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
