"""One time budget per test: its pytest timeout, and every wait inside it derived from it.

A test's timeout counts from the start of its setup (tests/conftest.py notes it), so a
session fixture that starts a private server spends the time of the first test that
asks for it. Every wait of the harness (``wait_for``, a process's exit) is capped by what
is left of the running test's budget, less a reserve for its teardown: on a slow machine
a wait fails with a message saying what it waited for, before the timeout kills the test.
A test whose waits add up to more than the suite's default timeout says so with its own
``timeout`` mark, computed from those waits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

#: What a test's budget keeps back for its teardown (stopping what it started).
TEARDOWN_S = 20.0


def timeout_of(item: pytest.Item) -> float:
    """The test's timeout in seconds: its ``timeout`` mark, or the configured one."""
    mark = item.get_closest_marker("timeout")
    if mark is not None and mark.args:
        return float(mark.args[0])
    return float(item.config.getini("timeout"))


@dataclass(frozen=True)
class Budget:
    """The time a test has left, less what its teardown needs."""

    deadline: float
    #: What is kept back for the teardown: the teardown's own budget.
    teardown_s: float

    @classmethod
    def of(cls, item: pytest.Item, teardown_s: float = TEARDOWN_S) -> Budget:
        """The budget of ``item``, from now (the start of its setup)."""
        total = timeout_of(item)
        assert total > teardown_s, f"a timeout of {total} s leaves nothing after teardown"
        return cls(time.monotonic() + total - teardown_s, teardown_s)

    def left(self) -> float:
        """Seconds until the deadline (at least a little, so a wait can still look once)."""
        return max(self.deadline - time.monotonic(), 0.1)

    def wait_s(self, at_most: float) -> float:
        """A wait of ``at_most`` seconds, or what is left if that is less."""
        return min(at_most, self.left())


class _Running:
    """The budget of the test being run, if any."""

    budget: Budget | None = None


RUNNING = _Running()


def begin(item: pytest.Item) -> Budget:
    """Start the budget of ``item``: called as its setup begins."""
    RUNNING.budget = Budget.of(item)
    return RUNNING.budget


def end() -> None:
    """The test's teardown: its waits get the time kept back for it."""
    if RUNNING.budget is not None:
        b = RUNNING.budget
        RUNNING.budget = Budget(max(b.deadline, time.monotonic()) + b.teardown_s, 0.0)


def current() -> Budget:
    """The running test's budget."""
    assert RUNNING.budget is not None, "no test is running"
    return RUNNING.budget


def capped(timeout_s: float) -> float:
    """``timeout_s``, or what is left of the running test's budget if that is less."""
    return timeout_s if RUNNING.budget is None else RUNNING.budget.wait_s(timeout_s)
