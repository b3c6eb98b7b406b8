"""Figures a benchmark reads back from SQL, the source of truth: how many jobs
finished and when, dispatch latency, and what the database did per job."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, func, select, text
from sqlalchemy.orm import aliased

from broker.states import JobState
from broker.store.schema import job_transitions, jobs


@dataclass(frozen=True)
class Finished:
    """Jobs of the benchmark's sites that are ``finished``, and the last one's time."""

    count: int
    last_at: datetime | None


def finished(conn: Connection, sites: Sequence[str]) -> Finished:
    """How many of the sites' jobs are finished, and when the last one finished."""
    row = conn.execute(
        select(func.count(), func.max(jobs.c.modified_at)).where(
            jobs.c.site.in_(sites), jobs.c.state == JobState.FINISHED
        )
    ).one()
    return Finished(row[0], row[1])


def job_rows(conn: Connection) -> int:
    """How many job rows the database holds."""
    return int(conn.execute(select(func.count()).select_from(jobs)).scalar_one())


def dispatch_latencies(conn: Connection, sites: Sequence[str]) -> list[float]:
    """Seconds from ``activated`` to ``sent`` (claimed) for each attempt at the sites."""
    activated = aliased(job_transitions)
    sent = aliased(job_transitions)
    rows = conn.execute(
        select(activated.c.at, sent.c.at)
        .join(jobs, jobs.c.id == activated.c.job_id)
        .join(
            sent,
            and_(sent.c.job_id == activated.c.job_id, sent.c.attempt == activated.c.attempt),
        )
        .where(
            jobs.c.site.in_(sites),
            activated.c.to_state == JobState.ACTIVATED,
            sent.c.to_state == JobState.SENT,
        )
    )
    return [(s - a).total_seconds() for a, s in rows]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``; 0 for none."""
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[max(0, min(98, int(q) - 1))]


@dataclass(frozen=True)
class DatabaseWork:
    """PostgreSQL's own counters for the database: transactions and rows written."""

    transactions: int
    rows_written: int

    def __sub__(self, other: DatabaseWork) -> DatabaseWork:
        return DatabaseWork(
            self.transactions - other.transactions, self.rows_written - other.rows_written
        )


def database_work(conn: Connection) -> DatabaseWork | None:
    """Committed transactions and rows inserted, updated or deleted so far (PostgreSQL only).

    PostgreSQL publishes these counters about once a second, so read them
    after a pause at the end of a run.
    """
    if conn.dialect.name != "postgresql":
        return None
    commits = conn.execute(
        text("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
    ).scalar_one()
    rows = conn.execute(
        text("SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables")
    ).scalar_one()
    return DatabaseWork(int(commits), int(rows))
