"""The planner's statistics of the hot tables, kept fresh by the services themselves.

PostgreSQL plans from statistics that ANALYZE gathers; with autovacuum off (as
on many tuned installs and in CI), or on a new database before its first
autoanalyze, they describe empty tables while a backlog grows from zero, and
plans that suit empty tables stay in use. So the broker service analyses each
hot table whose rows changed by more than autovacuum's own threshold (50 rows
plus 10 % of the table) since its last analysis, checking every few seconds
from PostgreSQL's own counters; a table of a million rows is analysed from a
sample of 30,000, in tens of milliseconds. Several processes share the work
through an advisory lock: one analyses, the others skip. SQLite has no such
need (its planner does not flip plans with the table's size).
"""

from __future__ import annotations

import logging

from sqlalchemy import Connection, Engine, bindparam, text
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger(__name__)

#: The tables every job's life writes to.
HOT_TABLES = (
    "jobs",
    "job_attempts",
    "job_transitions",
    "outbox",
    "pilots",
    "tasks",
    "files",
    "datasets",
    "dataset_contents",
    "replicas",
    "subscriptions",
    "job_files",
)
#: Autovacuum's defaults for analysing a table: this many changed rows ...
THRESHOLD_ROWS = 50
#: ... plus this fraction of the table's rows.
THRESHOLD_FRACTION = 0.1
#: The advisory lock that lets one process analyse at a time.
ADVISORY_LOCK = 0x70616E64  # "pand"

_STALE = text(
    "SELECT relname FROM pg_stat_user_tables "
    "WHERE schemaname = current_schema() AND relname IN :names "
    "AND n_mod_since_analyze > :rows + :fraction * n_live_tup "
    "ORDER BY relname"
).bindparams(bindparam("names", expanding=True))


def stale(conn: Connection) -> list[str]:
    """The hot tables whose statistics are behind their rows."""
    params = {"names": list(HOT_TABLES), "rows": THRESHOLD_ROWS, "fraction": THRESHOLD_FRACTION}
    return [r.relname for r in conn.execute(_STALE, params)]


def refresh(engine: Engine) -> list[str]:
    """Analyse the hot tables that need it (PostgreSQL only); the tables analysed.

    A failure is logged and left for the next call: statistics are an
    optimisation, never a reason to stop serving.
    """
    if engine.dialect.name != "postgresql":
        return []
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            return _analyse_if_first(conn)
    except SQLAlchemyError as exc:
        # (also PendingRollbackError: the unlock on a connection the database dropped
        # mid-ANALYZE; the advisory lock went with that session)
        log.warning("could not refresh the planner's statistics: %s", " ".join(str(exc).split()))
        return []


def _analyse_if_first(conn: Connection) -> list[str]:
    locked = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_LOCK}).scalar()
    if not locked:
        return []
    try:
        tables = stale(conn)
        for table in tables:
            conn.exec_driver_sql(f'ANALYZE "{table}"')
        if tables:
            log.debug("analysed %s", ", ".join(tables))
        return tables
    finally:
        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK})


def analyse_all(engine: Engine) -> None:
    """Analyse every table (after a migration), so that a new database starts with
    statistics; PostgreSQL only."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")
