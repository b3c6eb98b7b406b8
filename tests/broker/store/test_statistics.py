"""The planner's statistics of the hot tables, kept fresh without autovacuum."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, text

from broker.protocol import JobSpec
from broker.store import statistics
from broker.store.clock import now
from broker.store.engine import open_engine, transaction
from broker.store.jobs import insert_defined
from broker.store.migrate import upgrade
from tests.harness import wait_for
from tests.services import postgres_database


def _analysed_rows(engine: Engine, table: str) -> float:
    with transaction(engine) as conn:
        stmt = text("SELECT reltuples FROM pg_class WHERE relname = :t")
        return float(conn.execute(stmt, {"t": table}).scalar_one())


def test_a_table_that_grew_is_analysed_and_one_that_did_not_is_left() -> None:
    # Given a new database, upgraded (which analyses it), and 2,000 jobs put in since
    with postgres_database() as url:
        engine = open_engine(url)
        try:
            upgrade(engine)
            assert statistics.refresh(engine) == []
            specs = [JobSpec(command="true", id=f"j{n}") for n in range(2000)]
            with transaction(engine) as conn:
                insert_defined(conn, specs, now())
            # When the statistics are refreshed (PostgreSQL 15 publishes a backend's
            # counters within about 10 s of its transaction's end, so look until then)
            analysed = wait_for(lambda: statistics.refresh(engine), 30, "tables to analyse")
            # Then the tables that grew were analysed, and their row counts are known
            assert {"jobs", "job_attempts", "job_transitions"} <= set(analysed)
            assert _analysed_rows(engine, "jobs") == 2000
            # And nothing is analysed again until the tables change again
            assert statistics.refresh(engine) == []
        finally:
            engine.dispose()


def test_sqlite_needs_nothing(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade(engine)
    assert statistics.refresh(engine) == []
    engine.dispose()
