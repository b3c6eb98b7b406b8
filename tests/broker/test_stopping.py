"""The stop event of SIGTERM and SIGINT, in the process's own main thread."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator

import pytest

from broker.stopping import stop_on_signals


@pytest.fixture(autouse=True)
def _handlers_kept() -> Iterator[None]:
    """The test's signal handlers are put back afterwards."""
    kept = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in kept.items():
        signal.signal(signum, handler)


def test_a_signal_handled_while_the_event_is_locked_still_sets_it() -> None:
    # Given the stop event and its SIGTERM handler
    stop = stop_on_signals()
    handler = signal.getsignal(signal.SIGTERM)
    assert callable(handler)

    # When the handler runs while the event's own lock is held, as when the signal
    # interrupts the main thread inside Event.wait, or inside a first signal's handler
    def interrupted() -> None:
        with stop._cond:  # type: ignore[attr-defined]
            handler(signal.SIGTERM, None)

    thread = threading.Thread(target=interrupted, daemon=True)
    thread.start()
    thread.join(5)
    # Then the handler returned at once, and the event is set
    assert not thread.is_alive(), "the handler waited for the event's lock"
    assert stop.wait(5)


def test_sigterm_and_sigint_set_it_and_a_second_signal_is_harmless() -> None:
    # Given the stop event
    stop = stop_on_signals()
    # When SIGTERM comes, then SIGINT
    signal.raise_signal(signal.SIGTERM)
    signal.raise_signal(signal.SIGINT)
    # Then the event is set, and nothing was raised
    assert stop.wait(5)


def test_only_the_signals_named_are_taken() -> None:
    # Given a stop event on SIGTERM alone
    before = signal.getsignal(signal.SIGINT)
    stop = stop_on_signals(signal.SIGTERM)
    # Then SIGINT is left as it was, and SIGTERM sets the event
    assert signal.getsignal(signal.SIGINT) is before
    signal.raise_signal(signal.SIGTERM)
    assert stop.wait(5)
