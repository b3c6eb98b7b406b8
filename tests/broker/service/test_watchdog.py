"""The watchdog: each stalled state fails with its dispatcher code, then retries."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, select, update

from broker.error_codes import DispatcherError
from broker.service.watchdog import Watchdog
from broker.settings import Settings
from broker.states import JobState
from broker.store.clock import now
from broker.store.engine import transaction
from broker.store.jobs import get_job
from broker.store.schema import jobs, outbox
from tests.broker.service.jobs import jobs_in, row

S = JobState
SETTINGS = Settings(
    lost_heartbeat_s=100,
    sent_timeout_s=200,
    holding_timeout_s=300,
    transferring_timeout_s=400,
    assigned_timeout_s=500,
    retry_backoff_s=0.0,
)


@pytest.mark.parametrize(
    ("state", "timeout", "code"),
    [
        (S.RUNNING, 100, DispatcherError.LOST_HEARTBEAT),
        (S.STARTING, 100, DispatcherError.LOST_HEARTBEAT),
        (S.SENT, 200, DispatcherError.SENT_TIMEOUT),
        (S.HOLDING, 300, DispatcherError.HOLDING_TIMEOUT),
        (S.TRANSFERRING, 400, DispatcherError.TRANSFERRING_TIMEOUT),
        (S.ASSIGNED, 500, DispatcherError.ASSIGNED_TIMEOUT),
    ],
)
def test_a_stalled_job_fails_with_its_code_and_is_retried(
    engine: Engine, state: JobState, timeout: int, code: DispatcherError
) -> None:
    # Given one job stalled just past the timeout and one just within it
    t = now()
    (stalled,) = jobs_in(engine, state, at=t - timedelta(seconds=timeout + 1))
    (fresh,) = jobs_in(engine, state, at=t - timedelta(seconds=timeout - 1))
    # When the watchdog looks
    failed = Watchdog(engine, SETTINGS).check(at=t)
    # Then only the stalled one failed with the code, and its next attempt is activated
    # (the session's database may hold other tests' jobs, which the count includes)
    assert failed >= 1
    with transaction(engine) as conn:
        job = get_job(conn, stalled)
    first = job["attempts"][0]
    assert (first["state"], first["error_family"], first["error_code"]) == (
        "failed",
        "dispatcher",
        int(code),
    )
    assert job["attempt"] == 2 and job["state"] == "activated"
    assert row(engine, fresh)["state"] == state


def test_a_heartbeat_keeps_a_running_job_alive(engine: Engine) -> None:
    t = now()
    (job_id,) = jobs_in(engine, S.RUNNING, at=t - timedelta(seconds=1000))
    with transaction(engine) as conn:
        conn.execute(
            update(jobs).where(jobs.c.id == job_id).values(heartbeat_at=t - timedelta(seconds=10))
        )
    # (the count would include other tests' jobs on the session's database, which
    # may have become stale meanwhile: look at this job only)
    Watchdog(engine, SETTINGS).check(at=t)
    assert row(engine, job_id)["state"] == "running"


def test_the_last_attempt_stays_failed(engine: Engine) -> None:
    t = now()
    (job_id,) = jobs_in(engine, S.SENT, at=t - timedelta(seconds=1000), max_attempts=1)
    Watchdog(engine, SETTINGS).check(at=t)
    job = row(engine, job_id)
    assert (job["state"], job["attempt"], job["error_code"]) == (
        "failed",
        1,
        DispatcherError.SENT_TIMEOUT,
    )
    assert "claimed the job but sent nothing" in job["diagnostic"]


def test_a_retried_job_is_dispatched_through_the_outbox(engine: Engine) -> None:
    t = now()
    (job_id,) = jobs_in(engine, S.RUNNING, at=t - timedelta(seconds=1000))
    Watchdog(engine, SETTINGS).check(at=t)
    with transaction(engine) as conn:
        bodies = [r.body for r in conn.execute(select(outbox.c.body))]
    assert any(f'"job_id":"{job_id}","attempt":2' in b for b in bodies)


def test_after_an_outage_heartbeats_are_judged_a_heartbeat_interval_later(engine: Engine) -> None:
    # Given a running job whose last heartbeat is past the timeout, and a job stalled in
    # sent (heartbeats that an outage kept from arriving)
    t = now()
    (running,) = jobs_in(engine, S.RUNNING, at=t - timedelta(seconds=1000))
    (sent,) = jobs_in(engine, S.SENT, at=t - timedelta(seconds=1000))
    # And a watchdog whose service is connected again after an outage
    watchdog = Watchdog(engine, SETTINGS.replace(heartbeat_interval_s=60))
    watchdog.after_outage(at=t)
    # When it looks within a heartbeat interval
    watchdog.check(at=t + timedelta(seconds=59))
    # Then the running job is not judged yet, while other clocks are
    assert row(engine, running)["state"] == "running"
    assert row(engine, sent)["attempt"] == 2
    # When it looks once the interval is over, and no heartbeat came meanwhile
    watchdog.check(at=t + timedelta(seconds=61))
    # Then the job fails for lost heartbeat, and is retried
    with transaction(engine) as conn:
        first = get_job(conn, running)["attempts"][0]
    assert (first["state"], first["error_code"]) == ("failed", int(DispatcherError.LOST_HEARTBEAT))
