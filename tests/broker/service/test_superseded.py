"""Events of an attempt that is over: its pilot is told to stop, what it staged is removed."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine, select

from broker.messaging.consumer import Incoming
from broker.protocol import FileInfo, JobEvent, PilotCommand, decode_body
from broker.scopes import owner_scope
from broker.service.events import EventHandler
from broker.service.watchdog import Watchdog
from broker.settings import Settings
from broker.states import JobState
from broker.store import datasets
from broker.store.clock import now
from broker.store.engine import transaction
from broker.store.schema import outbox
from ddm_bridge.se import checksum, staging_dir
from tests.broker.service.jobs import OWNER, PILOT, SITE, jobs_in, row
from tests.broker.service.test_events import illegal_count
from tests.ddm_bridge.files import adder_pass

LOST_S = 60


def superseded_job(engine: Engine, root: Path, max_attempts: int = 3) -> tuple[str, Settings]:
    """A job whose attempt 1, on PILOT, the watchdog failed (and retried as attempt 2,
    unless it was the last)."""
    settings = Settings(lost_heartbeat_s=LOST_S, ddm_root=str(root), retry_backoff_s=0.0)
    stalled = now() - timedelta(seconds=LOST_S + 1)
    (job_id,) = jobs_in(engine, JobState.RUNNING, at=stalled, max_attempts=max_attempts)
    Watchdog(engine, settings).check(at=now())
    assert row(engine, job_id)["attempt"] == min(2, max_attempts)
    return job_id, settings


def report(engine: Engine, settings: Settings, event: JobEvent) -> None:
    EventHandler(engine, settings)([Incoming(event, None, user_id="guest")])


def event(job_id: str, kind: str, pilot: str = PILOT, **extra: object) -> JobEvent:
    return JobEvent(uuid.uuid4().hex, job_id, 1, pilot, kind, 0.0, **extra)  # type: ignore[arg-type]


def commands_to(engine: Engine, job_id: str) -> list[tuple[str, PilotCommand]]:
    """The pilot commands about ``job_id`` in the outbox, with their routing keys."""
    with transaction(engine) as conn:
        rows = conn.execute(select(outbox.c.routing_key, outbox.c.body)).all()
    found = [(r.routing_key, r.body) for r in rows if job_id in r.body and '"kill"' in r.body]
    return [(key, decode_body(PilotCommand, body)) for key, body in found]


def test_a_heartbeat_of_a_superseded_attempt_is_answered_with_a_kill(
    engine: Engine, tmp_path: Path
) -> None:
    # Given a job whose attempt 1 was superseded by attempt 2
    job_id, settings = superseded_job(engine, tmp_path)
    # When the pilot of attempt 1, and a pilot that never held it, heartbeat attempt 1
    report(engine, settings, event(job_id, "heartbeat"))
    report(engine, settings, event(job_id, "heartbeat", pilot="pilot-other"))
    # Then only the pilot of attempt 1 is told to stop it, with the reason
    ((key, command),) = commands_to(engine, job_id)
    assert key == f"{SITE}.{PILOT}"
    assert (command.command, command.job_id, command.attempt) == ("kill", job_id, 1)
    assert command.reason == "attempt 1 is superseded by attempt 2"
    # And the job's live attempt is untouched
    assert (row(engine, job_id)["attempt"], row(engine, job_id)["state"]) == (2, "activated")


def test_what_a_superseded_attempt_staged_is_removed_and_never_registered(
    engine: Engine, tmp_path: Path
) -> None:
    # Given a job whose attempt 1 was superseded, and the output its pilot then staged
    job_id, settings = superseded_job(engine, tmp_path)
    staged = staging_dir(str(tmp_path), SITE, job_id, 1) / "out.txt"
    staged.parent.mkdir(parents=True)
    staged.write_text("stale")
    found = checksum(staged)
    scope = owner_scope(OWNER)
    out = FileInfo(scope, "out.txt", uuid.uuid4().hex, found.size, found.adler32, "output")
    # When its pilot reports attempt 1 finished with that output
    report(engine, settings, event(job_id, "finished", exit_code=0, files=[out]))
    adder_pass(settings, engine)
    # Then (once a bridge passed) the staged output is gone, nothing is registered,
    # and attempt 2 goes on
    assert not staged.parent.exists()
    with transaction(engine) as conn:
        assert datasets.files_by_did(conn, [f"{scope}:out.txt"]) == {}
    assert (row(engine, job_id)["attempt"], row(engine, job_id)["state"]) == (2, "activated")


def test_a_pilot_reporting_on_its_jobs_last_failed_attempt_changes_nothing(
    engine: Engine, tmp_path: Path
) -> None:
    # Given a job whose only attempt the watchdog failed, and the log its pilot then staged
    job_id, settings = superseded_job(engine, tmp_path, max_attempts=1)
    staged = staging_dir(str(tmp_path), SITE, job_id, 1) / f"{job_id}.1.log.tgz"
    staged.parent.mkdir(parents=True)
    staged.write_text("log")
    found = checksum(staged)
    log = FileInfo(owner_scope(OWNER), staged.name, uuid.uuid4().hex, found.size, found.adler32)
    before = illegal_count()
    # When its pilot heartbeats, then reports the attempt finished
    report(engine, settings, event(job_id, "heartbeat"))
    report(engine, settings, event(job_id, "finished", exit_code=0, files=[log]))
    adder_pass(settings, engine)
    # Then it is told to stop, the job stays failed with no illegal transition tried,
    # and (once a bridge passed) the staged log is gone
    ((_, command),) = commands_to(engine, job_id)
    assert command.reason == "attempt 1 is over: the job is failed"
    assert row(engine, job_id)["state"] == "failed"
    assert illegal_count() == before
    assert not staged.parent.exists()
