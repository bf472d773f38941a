"""Ctrl-C as a request: which signals stop at the next step, and which abort at once."""

from __future__ import annotations

import os
import signal

import pytest

from gradwise.train._interrupt import graceful_interrupt


def test_a_terminals_ctrl_c_then_the_launchers_sigterm_is_one_request() -> None:
    # A rank gets SIGINT from the terminal and then SIGTERM from torch's launcher: taken
    # as a second Ctrl-C, it raised mid-run and the run ended "failed", steps lost.
    with graceful_interrupt((signal.SIGINT, signal.SIGTERM)) as flag:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        assert flag.requested
        with pytest.raises(KeyboardInterrupt):  # the same signal again: abort at once
            os.kill(os.getpid(), signal.SIGINT)


def test_a_second_ctrl_c_aborts_at_once_and_the_handler_is_given_back() -> None:
    # Not necessarily Python's default_int_handler: an in-process torch launch earlier in
    # the session leaves torch's own SIGINT handler installed.
    before = signal.getsignal(signal.SIGINT)
    with graceful_interrupt() as flag:
        os.kill(os.getpid(), signal.SIGINT)
        assert flag.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before
