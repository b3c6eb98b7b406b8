"""A test's waits are cut to what is left of its own timeout (tests/budget.py)."""

from __future__ import annotations

import time

import pytest

from tests.budget import TEARDOWN_S, Budget
from tests.harness import wait_for

SHORT_TIMEOUT_S = TEARDOWN_S + 2.0


@pytest.mark.timeout(SHORT_TIMEOUT_S)
def test_a_wait_longer_than_the_test_fails_in_time_saying_what_it_waited_for(
    budget: Budget,
) -> None:
    # Given a test whose timeout leaves 2 s after its teardown's share
    started = time.monotonic()
    # When it waits far longer than that for something that never comes
    with pytest.raises(AssertionError, match="waiting for a condition that never comes"):
        wait_for(lambda: False, timeout_s=999, what="a condition that never comes")
    # Then the wait ended with its message once the budget was spent, before the timeout
    assert time.monotonic() - started < SHORT_TIMEOUT_S - TEARDOWN_S + 1.0
    assert budget.left() < 1.0
