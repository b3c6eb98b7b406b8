"""Retry rules, and the new attempt a retry starts."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from broker.error_codes import DispatcherError, ErrorFamily, PilotError, TaskBufferError
from broker.operations import backoff, retries
from broker.operations.retries import Failure, decide
from broker.operations.throttle import Limits
from broker.protocol import JobSpec
from broker.retry_rules.defaults import DEFAULT_RULES
from broker.retry_rules.rules import Action, RetryRule, RuleSet
from broker.states import JobState
from broker.store.clock import now
from broker.store.engine import transaction
from broker.store.jobs import get_job
from broker.store.sites import add_site
from tests.broker.service.jobs import SITE, jobs_in, row

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
    assert decide(job_row(), failure).retry is retried


def test_exit_codes_marked_final_in_the_spec_are_not_retried() -> None:
    row_ = job_row(final_exit_codes=[3])
    assert not decide(row_, Failure(PILOT, PilotError.PAYLOAD_FAILED, 3)).retry
    assert decide(row_, Failure(PILOT, PilotError.PAYLOAD_FAILED, 4)).retry


def test_the_last_attempt_is_not_retried_unless_by_hand() -> None:
    last = job_row(attempt=3, max_attempts=3)
    failure = Failure(PILOT, PilotError.PAYLOAD_FAILED, 1)
    decision = decide(last, failure)
    assert not decision.retry and "the last of 3" in decision.why
    assert decide(last, failure, by_hand=True).retry


def test_out_of_memory_is_retried_with_more_memory() -> None:
    decision = decide(job_row(memory_mb=2000), Failure(PILOT, PilotError.OUT_OF_MEMORY))
    assert decision.retry and decision.spec.memory_mb == 3000


def test_a_retry_starts_a_new_attempt_that_keeps_the_old_ones_history(engine: Engine) -> None:
    # Given a job whose first attempt failed
    (job_id,) = jobs_in(engine, JobState.FAILED)
    failed = row(engine, job_id)
    # When it is retried
    decision = decide(
        failed, Failure(PILOT, PilotError.OUT_OF_MEMORY), retries.Policy(memory_factor=2.0)
    )
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


def rules(*given: RetryRule) -> RuleSet:
    return RuleSet.of(given, DEFAULT_RULES)


PAYLOAD_3 = Failure(PILOT, PilotError.PAYLOAD_FAILED, 3, "Segmentation fault")


def test_a_no_retry_rule_stops_a_retry_and_the_reason_names_it() -> None:
    rule = RetryRule("segv", Action.NO_RETRY, diagnostic="Segmentation")
    decision = decide(job_row(), PAYLOAD_3, rules=rules(rule))
    assert not decision.retry and decision.why == "rule segv (no_retry)"
    # A person may still retry it by hand
    assert decide(job_row(), PAYLOAD_3, by_hand=True, rules=rules(rule)).retry


def test_limit_retry_lowers_max_attempts_but_never_raises_it() -> None:
    twice = RetryRule("twice", Action.LIMIT_RETRY, exit_code=3, max_attempts=2)
    first = decide(job_row(attempt=1, max_attempts=5), PAYLOAD_3, rules=rules(twice))
    assert first.retry and first.why == "retryable failure by rule twice (limit_retry 2)"
    second = decide(job_row(attempt=2, max_attempts=5), PAYLOAD_3, rules=rules(twice))
    assert not second.retry
    assert second.why == "attempt 2 was the last of 2 (rule twice (limit_retry 2))"
    many = RetryRule("many", Action.LIMIT_RETRY, exit_code=3, max_attempts=9)
    last = decide(job_row(attempt=3, max_attempts=3), PAYLOAD_3, rules=rules(many))
    assert not last.retry and last.why == "attempt 3 was the last of 3"


def test_increase_walltime_and_memory_change_the_next_spec() -> None:
    policy = retries.Policy(memory_factor=2.0, walltime_factor=1.5)
    longer = RetryRule("longer", Action.INCREASE_WALLTIME, exit_code=3)
    decision = decide(job_row(walltime_s=1000), PAYLOAD_3, policy, rules=rules(longer))
    assert decision.retry and decision.spec.walltime_s == 1500
    assert "with a walltime of 1500 s by rule longer" in decision.why
    more = RetryRule("more", Action.INCREASE_MEMORY, exit_code=3)
    decision = decide(job_row(memory_mb=1000), PAYLOAD_3, policy, rules=rules(more))
    assert decision.spec.memory_mb == 2000 and not decision.elsewhere


def test_kills_and_the_jobs_own_final_exit_codes_are_beyond_rules() -> None:
    anything = RetryRule("anything", Action.INCREASE_MEMORY)
    killed = Failure(PILOT, PilotError.KILLED)
    assert not decide(job_row(), killed, rules=rules(anything)).retry
    final = job_row(final_exit_codes=[3])
    assert not decide(final, PAYLOAD_3, rules=rules(anything)).retry


def test_a_retry_backs_off_twice_as_long_each_attempt_with_jitter() -> None:
    policy = retries.Policy(backoff_s=10.0, backoff_max_s=30.0)
    for attempt, ceiling in ((1, 10.0), (2, 20.0), (3, 30.0), (9, 30.0)):
        waits = {policy.backoff(attempt) for _ in range(50)}
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(waits) > 1  # jitter: not all the same
    assert retries.Policy(backoff_s=0.0).backoff(3) == 0.0
    decision = decide(job_row(max_attempts=5), PAYLOAD_3, policy)
    assert 5.0 <= decision.delay_s <= 10.0 and "; backoff" in decision.why
    # A person's retry does not wait
    assert decide(job_row(), PAYLOAD_3, policy, by_hand=True).delay_s == 0.0


def test_a_retry_waits_in_defined_until_its_backoff_ends(engine: Engine) -> None:
    # Given a failed job, retried with a backoff
    (job_id,) = jobs_in(engine, JobState.FAILED)
    failed = row(engine, job_id)
    policy = retries.Policy(backoff_s=30.0)
    decision = decide(failed, PAYLOAD_3, policy)
    t = now()
    with transaction(engine) as conn:
        assert retries.retry(conn, [(failed, decision)], t, Limits(), policy) == 1
    # Then attempt 2 waits in defined, at its site, until its time
    waiting = row(engine, job_id)
    assert (waiting["attempt"], waiting["state"], waiting["site"]) == (2, "defined", SITE)
    due = t + timedelta(seconds=decision.delay_s)
    with transaction(engine) as conn:
        backoff.set_up_due(conn, due - timedelta(seconds=1), Limits())
    assert row(engine, job_id)["state"] == "defined"
    # And is set up (assigned, activated) once it has come
    with transaction(engine) as conn:
        assert backoff.set_up_due(conn, due + timedelta(seconds=1), Limits()) >= 1
        job = get_job(conn, job_id)
    assert job["state"] == "activated"
    second = [t["to_state"] for t in job["transitions"] if t["attempt"] == 2]
    assert second == ["defined", "assigned", "activated"]
    assert job["attempts"][0]["retry_decision"] == f"retried: {decision.why}"


def test_a_refused_retry_is_recorded_on_the_attempt(engine: Engine) -> None:
    (job_id,) = jobs_in(engine, JobState.FAILED)
    failed = row(engine, job_id)
    no = RetryRule("no", Action.NO_RETRY, exit_code=3)
    with transaction(engine) as conn:
        decision = decide(failed, PAYLOAD_3, rules=rules(no))
        assert retries.retry(conn, [(failed, decision)], now(), Limits()) == 0
        job = get_job(conn, job_id)
    assert (job["attempt"], job["state"]) == (1, "failed")
    assert job["attempts"][0]["retry_decision"] == "not retried: rule no (no_retry)"


def test_retry_elsewhere_brokers_the_next_attempt_away_from_the_failed_site(
    engine: Engine,
) -> None:
    # Given a job that may run at two sites and failed at the first
    other = f"OTHER_{uuid.uuid4().hex[:8].upper()}"
    with transaction(engine) as conn:
        add_site(conn, other)
    (job_id,) = jobs_in(engine, JobState.FAILED, sites=[SITE, other])
    failed = row(engine, job_id)
    elsewhere = RetryRule("elsewhere", Action.RETRY_ELSEWHERE, exit_code=3)
    decision = decide(failed, PAYLOAD_3, rules=rules(elsewhere))
    assert decision.elsewhere
    # When it is retried
    with transaction(engine) as conn:
        assert retries.retry(conn, [(failed, decision)], now(), Limits()) == 1
        job = get_job(conn, job_id)
    # Then the next attempt went to the other site, and says why
    assert (job["attempt"], job["site"], job["state"]) == (2, other, "activated")
    assigned = next(
        t for t in job["transitions"] if t["to_state"] == "assigned" and t["attempt"] == 2
    )
    assert "at another site by rule elsewhere (retry_elsewhere)" in assigned["reason"]
    assert list(job["brokerage"]["weights"]) == [other]


def test_retry_elsewhere_with_nowhere_else_stays_at_the_site(engine: Engine) -> None:
    (job_id,) = jobs_in(engine, JobState.FAILED, sites=[SITE])
    failed = row(engine, job_id)
    elsewhere = RetryRule("elsewhere", Action.RETRY_ELSEWHERE, exit_code=3)
    with transaction(engine) as conn:
        retries.retry(
            conn, [(failed, decide(failed, PAYLOAD_3, rules=rules(elsewhere)))], now(), Limits()
        )
        job = get_job(conn, job_id)
    assert (job["attempt"], job["site"]) == (2, SITE)
    assigned = next(
        t for t in job["transitions"] if t["to_state"] == "assigned" and t["attempt"] == 2
    )
    assert "no other site fits" in assigned["reason"]
