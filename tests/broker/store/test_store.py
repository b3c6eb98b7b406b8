"""The SQL store, the same contract on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import OperationalError

from broker.errors import DatabaseRefused, DatabaseUnavailable, SchemaMissing, StatementFailed
from broker.messaging.publisher import Outgoing
from broker.metrics import ILLEGAL_TRANSITIONS
from broker.protocol import JobSpec
from broker.states import JobState
from broker.store import endings, outbox, transitions
from broker.store.bulk import update_each
from broker.store.clock import now
from broker.store.engine import is_outage, open_engine, transaction
from broker.store.jobs import get_job, insert_defined
from broker.store.migrate import current_revision, head_revision, require_current, upgrade
from broker.store.schema import job_transitions, jobs, metadata
from broker.store.transitions import Change

S = JobState


def new_job(engine: Engine, job_id: str) -> None:
    with transaction(engine) as conn:
        insert_defined(conn, [JobSpec(command="true", id=job_id)], now())


def test_a_new_database_needs_an_upgrade_and_upgrade_is_repeatable(tmp_path: Path) -> None:
    e = open_engine(f"sqlite:///{tmp_path / 'new.sqlite'}")
    with pytest.raises(SchemaMissing, match="pandamq db upgrade"):
        require_current(e)
    assert upgrade(e) == upgrade(e) == head_revision() == current_revision(e)
    require_current(e)


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    e = open_engine(f"sqlite:///{tmp_path / 'wal.sqlite'}")
    with e.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_a_chain_of_changes_is_applied_in_order_with_history(engine: Engine) -> None:
    new_job(engine, "chain-1")
    changes = [
        Change("chain-1", 1, S.DEFINED, S.ASSIGNED, values={"site": None}),
        Change("chain-1", 1, S.ASSIGNED, S.ACTIVATED),
    ]
    with transaction(engine) as conn:
        applied = transitions.apply(conn, changes, now())
    assert applied == changes
    with transaction(engine) as conn:
        job = get_job(conn, "chain-1")
    assert job["state"] == "activated"
    assert [t["to_state"] for t in job["transitions"]] == ["defined", "assigned", "activated"]
    assert job["attempts"][0]["state"] == "activated"


def test_a_jobs_changes_that_follow_one_another_write_its_row_once(engine: Engine) -> None:
    # Given a job, and a pilot's changes of one batch: each from where the last left it
    new_job(engine, "once-1")
    with transaction(engine) as conn:
        transitions.apply(conn, [Change("once-1", 1, S.DEFINED, S.ASSIGNED)], now())
    changes = [
        Change("once-1", 1, S.ASSIGNED, S.ACTIVATED, values={"priority": 5}),
        Change("once-1", 1, S.ACTIVATED, S.SENT, values={"pilot_id": "p-1", "priority": 7}),
        Change("once-1", 1, S.SENT, S.STARTING, event_id="e-1"),
    ]
    with transaction(engine) as conn:
        # When they are applied together
        before = _rows_updated(conn)
        applied = transitions.apply(conn, changes, now())
        # Then the job's row is written once (PostgreSQL counts each row version)
        if engine.dialect.name == "postgresql":
            assert _rows_updated(conn) - before == 1
    # And each change is applied, in order, with its history row
    assert applied == changes
    with transaction(engine) as conn:
        job = get_job(conn, "once-1")
    assert (job["state"], job["pilot_id"], job["priority"]) == ("starting", "p-1", 7)
    assert [t["to_state"] for t in job["transitions"]][-3:] == ["activated", "sent", "starting"]
    assert (job["attempts"][0]["state"], job["attempts"][0]["pilot_id"]) == ("starting", "p-1")


def _rows_updated(conn: Connection) -> int:
    """The job rows this session has updated, as PostgreSQL counts them (0 elsewhere)."""
    if conn.dialect.name != "postgresql":
        return 0
    sql = "SELECT n_tup_upd FROM pg_stat_xact_user_tables WHERE relname = 'jobs'"
    return int(conn.exec_driver_sql(sql).scalar_one())


def test_a_change_that_does_not_follow_the_one_before_is_applied_apart(engine: Engine) -> None:
    # Given a job and two changes of it where the second expects a state the first
    # does not leave it in
    new_job(engine, "apart-1")
    changes = [
        Change("apart-1", 1, S.DEFINED, S.ASSIGNED),
        Change("apart-1", 1, S.ACTIVATED, S.SENT, values={"pilot_id": "p-1"}),
    ]
    with transaction(engine) as conn:
        applied = transitions.apply(conn, changes, now())
    # Then only the first is applied, and nothing of the second is written
    assert applied == changes[:1]
    with transaction(engine) as conn:
        job = get_job(conn, "apart-1")
    assert (job["state"], job["pilot_id"]) == ("assigned", None)


def test_a_task_sized_group_of_changes_is_applied_in_one_call(engine: Engine) -> None:
    # Given 70,000 defined jobs, as one task's split makes them: more jobs than one
    # statement may carry as parameters (65,535 on PostgreSQL)
    ids = [f"bulk-{n:05d}" for n in range(70_000)]
    with transaction(engine) as conn:
        insert_defined(conn, [JobSpec(command="true", id=i) for i in ids], now())
    # When they are all assigned in one call
    changes = [Change(i, 1, S.DEFINED, S.ASSIGNED) for i in ids]
    with transaction(engine) as conn:
        applied = transitions.apply(conn, changes, now())
    # Then every one moved
    assert len(applied) == len(ids)
    with transaction(engine) as conn:
        assert get_job(conn, ids[-1])["state"] == "assigned"


def test_a_statement_the_database_refuses_is_its_own_fault_not_an_outage(
    engine: Engine,
) -> None:
    # Given a database that is up, When a statement carries more parameters than it takes
    ids = [f"none-{n}" for n in range(300_000)]
    # Then the error says the statement failed (retrying it cannot help), not that
    # the database is unavailable (which would retry it for ever)
    with pytest.raises(StatementFailed, match="failed a statement"), transaction(engine) as conn:
        conn.execute(select(jobs.c.id).where(jobs.c.id.in_(ids))).all()


POSTGRES = "postgresql+psycopg://{user}@127.0.0.1:{port}/{database}"


@pytest.mark.services
@pytest.mark.parametrize(
    ("url", "says"),
    [
        (
            POSTGRES.format(user="postgres", port=5432, database="pandamq_no_such_db"),
            r'database "pandamq_no_such_db" does not exist: create it \(`createdb',
        ),
        (
            POSTGRES.format(user="pandamq_no_such_user", port=5432, database="postgres"),
            r'role "pandamq_no_such_user" does not exist: create the user',
        ),
    ],
    ids=["database", "user"],
)
def test_a_database_or_user_that_does_not_exist_is_refused_for_good(url: str, says: str) -> None:
    # Given PostgreSQL up, and a URL naming a database or user it does not have
    engine = open_engine(url, create=False)
    # When a transaction begins, or the schema is checked
    # Then the error is permanent and says what to do, rather than an outage to wait out
    with pytest.raises(DatabaseRefused, match=says), transaction(engine) as conn:
        conn.exec_driver_sql("SELECT 1")
    with pytest.raises(DatabaseRefused, match=says):
        require_current(engine)
    engine.dispose()


def test_a_database_server_that_does_not_answer_is_an_outage_to_wait_out() -> None:
    # Given a URL on a port nothing listens on
    engine = open_engine(POSTGRES.format(user="postgres", port=1, database="postgres"))
    # Then the error is one to wait out
    with pytest.raises(DatabaseUnavailable, match="cannot reach the database"):
        require_current(engine)
    engine.dispose()


@pytest.mark.services
def test_a_connection_lost_in_a_transaction_is_an_outage_to_wait_out(
    services: tuple[str, str],
) -> None:
    # Given a transaction on PostgreSQL that has noted a job's ending
    engine = open_engine(services[1])
    upgrade(engine)
    try:
        with pytest.raises(DatabaseUnavailable), transaction(engine) as conn:
            endings.noted(conn, ["lost-1"])
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            # When its session is ended under it (a failover, a restart), mid-transaction
            with engine.connect() as other:
                other.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
            conn.exec_driver_sql("SELECT 1")
        # Then it is an outage to wait out (it was SQLAlchemy's PendingRollbackError, which
        # ended the DDM bridge that met it), and the next transaction works
        with transaction(engine) as conn:
            assert conn.exec_driver_sql("SELECT 1").scalar() == 1
    finally:
        engine.dispose()


@pytest.mark.services
def test_a_connection_not_made_is_an_outage_even_when_the_database_answers_again(
    services: tuple[str, str],
) -> None:
    # Given the error libpq gives a connection it could not make (no SQLSTATE)
    with pytest.raises(psycopg.OperationalError) as failed:
        psycopg.connect("postgresql://postgres@127.0.0.1:1/postgres", connect_timeout=5)
    assert failed.value.sqlstate is None
    lost = OperationalError(None, None, failed.value)
    # When the database answers a moment later (the replica was just promoted)
    engine = open_engine(services[1])
    try:
        # Then the error is an outage to wait out, not a statement that failed
        assert is_outage(lost, engine)
    finally:
        engine.dispose()


def test_an_illegal_change_is_refused_counted_and_not_applied(engine: Engine) -> None:
    new_job(engine, "illegal-1")
    before = ILLEGAL_TRANSITIONS.labels(from_state="defined", to_state="running")._value.get()
    with transaction(engine) as conn:
        applied = transitions.apply(conn, [Change("illegal-1", 1, S.DEFINED, S.RUNNING)], now())
    assert applied == []
    after = ILLEGAL_TRANSITIONS.labels(from_state="defined", to_state="running")._value.get()
    assert after == before + 1
    with transaction(engine) as conn:
        assert get_job(conn, "illegal-1")["state"] == "defined"


def test_a_stale_change_loses_the_compare_and_set(engine: Engine) -> None:
    # Given a job already moved past the state a change expects
    new_job(engine, "stale-1")
    with transaction(engine) as conn:
        transitions.apply(conn, [Change("stale-1", 1, S.DEFINED, S.ASSIGNED)], now())
    # When a change still expecting 'defined' arrives, or one for another attempt
    with transaction(engine) as conn:
        late = transitions.apply(
            conn,
            [
                Change("stale-1", 1, S.DEFINED, S.CANCELLED),
                Change("stale-1", 2, S.ASSIGNED, S.ACTIVATED),
            ],
            now(),
        )
    # Then neither is applied
    assert late == []
    with transaction(engine) as conn:
        assert get_job(conn, "stale-1")["state"] == "assigned"


def test_concurrent_claims_on_one_job_have_one_winner(engine: Engine) -> None:
    new_job(engine, "race-1")
    with transaction(engine) as conn:
        transitions.apply(
            conn,
            [
                Change("race-1", 1, S.DEFINED, S.ASSIGNED),
                Change("race-1", 1, S.ASSIGNED, S.ACTIVATED),
            ],
            now(),
        )
    barrier = threading.Barrier(4)
    wins: list[int] = []

    def claim(pilot: str) -> None:
        barrier.wait()
        with transaction(engine) as conn:
            change = Change("race-1", 1, S.ACTIVATED, S.SENT, values={"pilot_id": pilot})
            wins.append(len(transitions.apply(conn, [change], now())))

    threads = [threading.Thread(target=claim, args=(f"pilot-{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(wins) == [0, 0, 0, 1]
    with engine.connect() as conn:
        sent = conn.execute(
            select(job_transitions).where(
                job_transitions.c.job_id == "race-1", job_transitions.c.to_state == "sent"
            )
        ).all()
    assert len(sent) == 1


def test_outbox_keeps_messages_until_removed(engine: Engine) -> None:
    # Given an empty outbox (other tests of this session may have used it)
    with transaction(engine) as conn:
        outbox.remove(conn, [row_id for row_id, _ in outbox.take(conn, 100_000)])
    messages = [Outgoing("ex", f"rk{n}", f'{{"n": {n}}}'.encode()) for n in range(3)]
    with transaction(engine) as conn:
        outbox.put(conn, messages)
    with transaction(engine) as conn:
        taken = outbox.take(conn, 2)
        assert [m for _, m in taken] == messages[:2]
        outbox.remove(conn, [row_id for row_id, _ in taken])
    with transaction(engine) as conn:
        rest = outbox.take(conn, 10)
        outbox.remove(conn, [row_id for row_id, _ in rest])  # leave nothing to other tests
    assert [m for _, m in rest] == messages[2:]


def test_the_migrations_build_exactly_the_schema_the_code_defines(engine: Engine) -> None:
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    assert differences == []


def test_update_each_sets_every_row_its_own_values_the_later_winning(engine: Engine) -> None:
    # Given three jobs
    for job_id in ("each-1", "each-2", "each-3"):
        new_job(engine, job_id)
    # When each gets its own values in one call, each-2 twice, and each-3 nothing
    rows = [
        {"id": "each-1", "attempt": 1, "site": None, "brokerage": {"why": "one"}, "priority": 7},
        {"id": "each-2", "attempt": 1, "site": None, "brokerage": None, "priority": 1},
        {"id": "each-2", "attempt": 1, "site": None, "brokerage": {"n": [2]}, "priority": 2},
    ]
    with transaction(engine) as conn:
        update_each(conn, jobs, ("id", "attempt"), rows)
    # Then each row has its own values (JSON included), the later of the two for each-2
    with transaction(engine) as conn:
        found = {
            r.id: (r.brokerage, r.priority)
            for r in conn.execute(select(jobs.c.id, jobs.c.brokerage, jobs.c.priority))
            if r.id.startswith("each-")
        }
    assert found == {"each-1": ({"why": "one"}, 7), "each-2": ({"n": [2]}, 2), "each-3": (None, 0)}
