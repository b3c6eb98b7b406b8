"""Event ingestion: idempotent, ordered per job, safe with several broker processes."""

from __future__ import annotations

import itertools
import threading
import uuid
from typing import Any

from sqlalchemy import Engine, select

from broker.messaging.consumer import Incoming
from broker.metrics import ILLEGAL_TRANSITIONS
from broker.protocol import FileInfo, JobEvent, JobSpec
from broker.scopes import owner_scope
from broker.service.events import EventHandler
from broker.settings import Settings
from broker.states import JobState
from broker.store import reports, transitions
from broker.store.clock import now
from broker.store.engine import open_engine, transaction
from broker.store.jobs import get_job, insert_defined, states_of
from broker.store.schema import reported_outputs
from broker.store.transitions import Change
from tests.broker.service.jobs import OWNER
from tests.harness import wait_for

S = JobState
PILOT = "pilot-1"
#: The scope of the outputs of the jobs of ``jobs_in``.
SCOPE = owner_scope(OWNER)


def sent_jobs(engine: Engine, count: int) -> list[str]:
    """Jobs claimed by PILOT, in state sent."""
    ids = [uuid.uuid4().hex for _ in range(count)]
    path = [S.DEFINED, S.ASSIGNED, S.ACTIVATED, S.SENT]
    with transaction(engine) as conn:
        insert_defined(conn, [JobSpec(command="true", id=i) for i in ids], now())
        changes = [
            Change(i, 1, a, b, values={"pilot_id": PILOT})
            for i in ids
            for a, b in itertools.pairwise(path)
        ]
        transitions.apply(conn, changes, now())
    return ids


def events(ids: list[str], kind: str, **extra: Any) -> list[Incoming[JobEvent]]:
    return [
        Incoming(JobEvent(uuid.uuid4().hex, i, 1, PILOT, kind, 0.0, **extra), None, user_id="guest")
        for i in ids
    ]


def illegal_count() -> float:
    """Illegal transitions counted so far, over every label set."""
    return sum(
        s.value
        for m in ILLEGAL_TRANSITIONS.collect()
        for s in m.samples
        if s.name.endswith("_total")
    )


def test_a_redelivered_event_is_applied_once(engine: Engine) -> None:
    (job_id,) = sent_jobs(engine, 1)
    handler = EventHandler(engine, Settings())
    starting = events([job_id], "starting")
    handler(starting)
    handler(starting)  # the same event again, as after a crash before the ack
    with transaction(engine) as conn:
        history = [t["to_state"] for t in get_job(conn, job_id)["transitions"]]
    assert history.count("starting") == 1


def test_a_late_progress_report_is_skipped_not_counted_illegal(engine: Engine) -> None:
    (job_id,) = sent_jobs(engine, 1)
    handler = EventHandler(engine, Settings())
    before = illegal_count()
    handler(events([job_id], "running"))
    handler(events([job_id], "starting"))  # overtaken by running
    with transaction(engine) as conn:
        assert states_of(conn, [job_id]) == {job_id: "running"}
    assert illegal_count() == before


def test_events_racing_another_broker_process_are_not_lost(services: tuple[str, str]) -> None:
    # Given claimed jobs, and another broker process that has just moved them to
    # running in a transaction it has not committed yet
    engine = open_engine(services[1])
    ids = sent_jobs(engine, 5)
    finished = events(ids, "finished", exit_code=0)
    errors: list[BaseException] = []

    def handle() -> None:
        try:
            EventHandler(engine, Settings())(finished)
        except BaseException as exc:
            errors.append(exc)

    with engine.connect() as other:
        tx = other.begin()
        running = [Change(i, 1, S.SENT, S.RUNNING) for i in ids]
        assert len(transitions.apply(other, running, now())) == len(ids)
        # When this process handles 'finished' for the same jobs meanwhile
        thread = threading.Thread(target=handle)
        thread.start()
        wait_for(lambda: waiting_on_locks(engine) > 0, what="the handler to wait for the rows")
        tx.commit()
    thread.join(timeout=30)
    # Then it waited for the other's result and applied its own on top: nothing lost
    assert not errors
    with transaction(engine) as conn:
        assert set(states_of(conn, ids).values()) == {"finished"}
    engine.dispose()


def waiting_on_locks(engine: Engine) -> int:
    """How many sessions of this database wait for a row lock."""
    with engine.connect() as conn:
        query = (
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return int(conn.exec_driver_sql(query).scalar_one())


def test_a_second_ending_of_a_held_attempt_is_skipped_not_counted_illegal(engine: Engine) -> None:
    # Given a job whose pilot reported it finished, with its log, so that it is holding
    (job_id,) = sent_jobs(engine, 1)
    handler = EventHandler(engine, Settings())
    log = FileInfo(SCOPE, f"{job_id}.1.log.tgz", uuid.uuid4().hex, 10, "0000000a", "log")
    handler(events([job_id], "finished", exit_code=0, files=[log]))
    before = illegal_count()
    # When its pilot reports an ending again under a new event id, failed this time
    handler(events([job_id], "failed", exit_code=1, files=[log]))
    handler(events([job_id], "finished", exit_code=0))
    # Then the first ending stands: the job stays holding for the DDM bridge, with the
    # first report kept, and no illegal transition was tried
    with transaction(engine) as conn:
        assert states_of(conn, [job_id]) == {job_id: "holding"}
        kept = conn.scalars(
            select(reported_outputs.c.event).where(reported_outputs.c.job_id == job_id)
        )
        assert [reports.parse(body).kind for body in kept] == ["finished"]
        # (and no later test's DDM bridge, on this database, meets a job of no site)
        reports.remove(conn, [(job_id, 1)])
    assert illegal_count() == before
