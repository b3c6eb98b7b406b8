"""One time budget per test: its pytest timeout, and every wait inside it derived from it.

A test that waits for slow things (rabbitmqctl, restarts, a whole system) takes its
waits from what is left of its own timeout, less a reserve for its teardown, so that
a slow machine fails a wait with a message before the timeout kills the test.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest


def timeout_of(request: pytest.FixtureRequest) -> float:
    """The test's timeout in seconds: its ``timeout`` mark, or the configured one."""
    mark = request.node.get_closest_marker("timeout")
    if mark is not None and mark.args:
        return float(mark.args[0])
    return float(request.config.getini("timeout"))


@dataclass(frozen=True)
class Budget:
    """The time a test has left, less what its teardown needs."""

    deadline: float

    @classmethod
    def of(cls, request: pytest.FixtureRequest, teardown_s: float) -> Budget:
        """The budget of the test ``request`` belongs to, from now."""
        total = timeout_of(request)
        assert total > teardown_s, f"a timeout of {total} s leaves nothing after teardown"
        return cls(time.monotonic() + total - teardown_s)

    def left(self) -> float:
        """Seconds until the deadline (at least a little, so a wait can still look once)."""
        return max(self.deadline - time.monotonic(), 0.1)

    def wait_s(self, at_most: float) -> float:
        """A wait of ``at_most`` seconds, or what is left if that is less."""
        return min(at_most, self.left())
