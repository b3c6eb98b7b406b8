"""Retry rules, and the new attempt a retry starts."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine

from broker.error_codes import DispatcherError, ErrorFamily, PilotError, TaskBufferError
from broker.protocol import JobSpec
from broker.service import retries
from broker.service.retries import Failure, decide
from broker.service.throttle import Limits
from broker.states import JobState
from broker.store.clock import now
from broker.store.engine import transaction
from broker.store.jobs import get_job
from tests.broker.service.jobs import jobs_in, row

PILOT, DISPATCHER = ErrorFamily.PILOT.value, ErrorFamily.DISPATCHER.value


def job_row(attempt: int = 1, max_attempts: int = 3, **spec: Any) -> dict[str, Any]:
    return {
        "attempt": attempt,
        "max_attempts": max_attempts,
        "spec": JobSpec(command="true", id="j", **spec).__dict__,
    }


@pytest.mark.parametrize(
    ("failure", "retried"),
    [
        (Failure(PILOT, PilotError.PAYLOAD_FAILED, 1), True),
        (Failure(DISPATCHER, DispatcherError.LOST_HEARTBEAT), True),
        (Failure(PILOT, PilotError.PAYLOAD_FAILED, 127), False),
        (Failure(PILOT, PilotError.PAYLOAD_NOT_STARTED), False),
        (Failure(PILOT, PilotError.KILLED), False),
        (Failure(ErrorFamily.TASKBUFFER.value, TaskBufferError.KILLED), False),
    ],
)
def test_which_failures_are_retried(failure: Failure, retried: bool) -> None:
    assert decide(job_row(), failure, 1.5).retry is retried


def test_exit_codes_marked_final_in_the_spec_are_not_retried() -> None:
    row_ = job_row(final_exit_codes=[3])
    assert not decide(row_, Failure(PILOT, PilotError.PAYLOAD_FAILED, 3), 1.5).retry
    assert decide(row_, Failure(PILOT, PilotError.PAYLOAD_FAILED, 4), 1.5).retry


def test_the_last_attempt_is_not_retried_unless_by_hand() -> None:
    last = job_row(attempt=3, max_attempts=3)
    failure = Failure(PILOT, PilotError.PAYLOAD_FAILED, 1)
    decision = decide(last, failure, 1.5)
    assert not decision.retry and "the last of 3" in decision.why
    assert decide(last, failure, 1.5, by_hand=True).retry


def test_out_of_memory_is_retried_with_more_memory() -> None:
    decision = decide(job_row(memory_mb=2000), Failure(PILOT, PilotError.OUT_OF_MEMORY), 1.5)
    assert decision.retry and decision.spec.memory_mb == 3000


def test_a_retry_starts_a_new_attempt_that_keeps_the_old_ones_history(engine: Engine) -> None:
    # Given a job whose first attempt failed
    (job_id,) = jobs_in(engine, JobState.FAILED)
    failed = row(engine, job_id)
    # When it is retried
    decision = decide(failed, Failure(PILOT, PilotError.OUT_OF_MEMORY), 2.0)
    with transaction(engine) as conn:
        assert retries.retry(conn, [(failed, decision)], now(), Limits()) == 1
        # a second retry of the same failed attempt does nothing (compare-and-set)
        assert retries.retry(conn, [(failed, decision)], now(), Limits()) == 0
    # Then attempt 2 is activated with more memory, and attempt 1 is still failed
    with transaction(engine) as conn:
        job = get_job(conn, job_id)
    assert (job["attempt"], job["state"], job["spec"]["memory_mb"]) == (2, "activated", 4000)
    assert [a["state"] for a in job["attempts"]] == ["failed", "activated"]
    second = [t["to_state"] for t in job["transitions"] if t["attempt"] == 2]
    assert second == ["defined", "assigned", "activated"]
