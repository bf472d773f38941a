"""A search worker's stop signals: a Ctrl-C (SIGINT) and the SIGTERM of `gradwise search`
are one request, in a trial's training (stop after the step) and outside it."""

from __future__ import annotations

import os
import signal

import pytest

from gradwise.train._interrupt import graceful_interrupt, stop_requests

STOP = (signal.SIGINT, signal.SIGTERM)


def _send(signum: signal.Signals) -> None:
    os.kill(os.getpid(), signum)  # handled before os.kill returns to the caller


@pytest.mark.parametrize("first", STOP, ids=["ctrl-c first", "sigterm first"])
def test_in_training_the_two_signals_are_one_request_and_the_same_again_aborts(first) -> None:
    other = signal.SIGTERM if first == signal.SIGINT else signal.SIGINT
    # The trainer of a worker asks for SIGINT alone (it is not distributed).
    with stop_requests(STOP), graceful_interrupt((signal.SIGINT,)) as flag:
        _send(first)
        assert flag.requested
        _send(other)  # the same request: no KeyboardInterrupt inside the step
        with pytest.raises(KeyboardInterrupt):
            _send(first)


def test_outside_training_the_first_signal_stops_and_the_other_one_after_it_does_not() -> None:
    before = {signum: signal.getsignal(signum) for signum in STOP}
    with stop_requests(STOP):
        with pytest.raises(KeyboardInterrupt):
            _send(signal.SIGINT)
        # The search's SIGTERM after a terminal's Ctrl-C, while the worker stops: before,
        # its default action killed the worker before it said how it ended.
        _send(signal.SIGTERM)
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C
            _send(signal.SIGINT)
    assert {signum: signal.getsignal(signum) for signum in STOP} == before


def test_a_request_in_training_holds_after_it() -> None:
    # A Ctrl-C that stopped the training; the search's SIGTERM comes once the trainer has
    # given the handlers back: still the same request.
    with stop_requests(STOP):
        with graceful_interrupt() as flag:
            _send(signal.SIGINT)
        assert flag.requested
        _send(signal.SIGTERM)
        # A training started after a stop was requested stops after its first step.
        with graceful_interrupt() as flag:
            assert flag.requested


def test_a_nested_block_is_part_of_the_outer_one() -> None:
    with stop_requests(STOP):
        with pytest.raises(KeyboardInterrupt):
            _send(signal.SIGINT)
        with stop_requests(STOP):
            _send(signal.SIGTERM)  # the outer block's request: nothing more
