"""The hot path's statements are planned by the keys they are given, not by the
planner's statistics: on a new database, never analysed since ``pandamq db
upgrade`` while a backlog grew, a batch of jobs is never found by reading every
job in a state, nor a slice of files by reading every file of a scope."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, select, text, update

from broker.protocol import JobSpec
from broker.states import JobState
from broker.store.bulk import matching_update
from broker.store.clock import now
from broker.store.datasets import FileRecord, files_by_did, register
from broker.store.engine import open_engine, transaction
from broker.store.jobs import insert_defined
from broker.store.keys import attempts_in, pairs_in
from broker.store.migrate import upgrade
from broker.store.schema import files, jobs
from broker.store.sites import add_site
from tests.services import postgres_database

#: Indexes of ``jobs`` whose first column is ``state``.
STATE_INDEXES = ("ix_jobs_state_priority", "ix_jobs_state_modified_at_site", "ix_jobs_state_owner")


@pytest.fixture(scope="module")
def grown() -> Iterator[Engine]:
    """A new database, upgraded (its statistics are the empty tables'), where 3,000 jobs
    then went to ``throttled`` and 3,000 files were registered, and nothing analysed."""
    with postgres_database() as url:
        engine = open_engine(url)
        try:
            upgrade(engine)
            t = now()
            with transaction(engine) as conn:
                add_site(conn, "SITE-A")
                insert_defined(conn, [JobSpec("true", id=f"j{n:05d}") for n in range(3000)], t)
                conn.execute(update(jobs).values(state=JobState.THROTTLED.value, site="SITE-A"))
                placed = [
                    (FileRecord("s", f"f{n:05d}", "g", 1, "00000001"), "-") for n in range(3000)
                ]
                register(conn, "ds", placed, "SITE-A", t)
            yield engine
        finally:
            engine.dispose()


def _plan(conn: Connection, stmt: Any) -> dict[str, Any]:
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    sql = f"EXPLAIN (FORMAT JSON) {compiled}"
    row = conn.exec_driver_sql(sql, compiled.params).scalar_one()
    plan = row if isinstance(row, list) else json.loads(row)
    return dict(plan[0]["Plan"])


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


def test_a_batch_compare_and_set_reads_no_index_on_state(grown: Engine) -> None:
    # Given the grown database, whose statistics say there are no throttled jobs
    keys = [(f"j{n:05d}", 1) for n in range(0, 3000, 30)]
    with transaction(grown) as conn:
        # When the compare-and-set of a batch of 100 of them is planned
        stmt = (
            update(jobs)
            .where(attempts_in(conn, keys, [JobState.THROTTLED.value]))
            .values(state=JobState.ACTIVATED.value)
            .returning(jobs.c.id)
        )
        plan = _plan(conn, stmt)
        # Then no index on state is read: the batch is found by its keys
        used = {n.get("Index Name", "") for n in _nodes(plan)}
        assert not any(name.startswith(STATE_INDEXES) for name in used), used
        # And it moves exactly the batch
        moved = {r.id for r in conn.execute(stmt)}
        assert moved == {job_id for job_id, _ in keys}


def test_a_compare_and_set_with_values_reads_no_index_on_state(grown: Engine) -> None:
    # Given the grown database, whose statistics say there are no throttled jobs
    keys = [(f"j{n:05d}", 1) for n in range(1, 3000, 30)]
    rows = [
        {"id": job_id, "attempt": attempt, "state": JobState.THROTTLED.value, "pilot_id": "p"}
        for job_id, attempt in keys
    ]
    with transaction(grown) as conn:
        # When the compare-and-set that also writes each job's values is planned
        stmt = matching_update(
            conn, jobs, ("id", "attempt", "state"), rows, {"state": "activated"}, "id"
        )
        plan = _plan(conn, stmt)
        # Then no index on state is read: the batch is found by its keys
        used = {n.get("Index Name", "") for n in _nodes(plan)}
        assert not any(name.startswith(STATE_INDEXES) for name in used), used
        # And it moves exactly the batch, with the values
        moved = {r.id for r in conn.execute(stmt)}
        assert moved == {job_id for job_id, _ in keys}
        written = select(jobs.c.id).where(jobs.c.pilot_id == "p", jobs.c.state == "activated")
        assert set(conn.scalars(written)) == moved
        conn.rollback()


def test_a_compare_and_set_leaves_rows_in_another_state_or_attempt(grown: Engine) -> None:
    with transaction(grown) as conn:
        stmt = update(jobs).where(attempts_in(conn, [("j00001", 1), ("j00002", 2)], ["defined"]))
        assert conn.execute(stmt.values(priority=7)).rowcount == 0
        conn.rollback()


def test_a_slice_of_files_is_looked_up_by_scope_and_name_together(grown: Engine) -> None:
    # Given the grown database, whose statistics say the files table is empty
    keys = [(f"f{n:05d}", "s") for n in range(0, 3000, 6)]
    with transaction(grown) as conn:
        # When the look-up of 500 files is planned
        stmt = select(files.c.id).where(pairs_in(conn, files.c.name, files.c.scope, keys))
        plan = _plan(conn, stmt)
        # Then no file is read only to be dropped by a filter on its name
        assert all(not n.get("Filter", "").startswith("((name)") for n in _nodes(plan)), plan
        assert len(files_by_did(conn, [f"s:{name}" for name, _ in keys])) == 500


def test_an_unknown_pair_matches_nothing(grown: Engine) -> None:
    with transaction(grown) as conn:
        stmt = select(files.c.id).where(pairs_in(conn, files.c.name, files.c.scope, [("f1", "x")]))
        assert conn.execute(stmt).all() == []
        assert conn.execute(text("SELECT count(*) FROM files")).scalar_one() == 3000
