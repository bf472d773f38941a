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


@contextmanager
def graceful_interrupt(
    signals: tuple[signal.Signals, ...] = (signal.SIGINT,),
) -> Iterator[InterruptFlag]:
    """Within this block the first Ctrl-C (or other of ``signals``) only sets ``flag.requested``.

    A distributed rank also takes SIGTERM this way: torch's launcher stops its ranks with
    SIGTERM when it is interrupted, and the ranks then agree on a step to stop at and
    checkpoint it.

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
