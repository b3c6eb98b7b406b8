"""A retry's backoff: the new attempt waits in ``defined``, then is set up
(``defined → assigned → activated``).

A retried attempt whose backoff is not over waits in ``defined`` with its site
and ``retry_at`` (``wait``, from ``broker.operations.retries``); the broker service's periodic
pass (re-brokerage's, every ``brokerage_interval_s``) sets up those whose time
has come, as the retry would have at once. No other pass looks at ``defined``
jobs: the watchdog and re-brokerage leave them alone, a kill cancels them.
Safe with several broker processes: rows are taken with ``FOR UPDATE SKIP
LOCKED`` and ``defined → assigned`` is a compare-and-set.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import Connection, RowMapping, select, update

from broker.observability.logs import job_context
from broker.operations.activation import Placement
from broker.operations.setup import set_up
from broker.operations.throttle import Limits
from broker.states import JobState
from broker.store.jobs import spec_of
from broker.store.schema import jobs

log = logging.getLogger(__name__)

#: How many waiting retries one pass sets up at most (the rest wait for the next pass).
BATCH = 1000


def wait(conn: Connection, later: list[tuple[Placement, float]], now: datetime) -> None:
    """Leave each attempt ``defined`` at its placement's site for its delay (seconds)."""
    for p, delay_s in later:
        values = {"retry_at": now + timedelta(seconds=delay_s), **p.values()}
        conn.execute(
            update(jobs).where(jobs.c.id == p.spec.id, jobs.c.attempt == p.attempt).values(**values)
        )
        log.info(
            "job %s: attempt %d waits %.1f s before it is set up (%s)",
            p.spec.id,
            p.attempt,
            delay_s,
            p.why,
            extra=job_context(
                job_id=p.spec.id, attempt=p.attempt, task_id=p.spec.task_id, site=p.site
            ),
        )


def set_up_due(conn: Connection, now: datetime, limits: Limits) -> int:
    """Set up every retried attempt whose backoff ended by ``now``; how many."""
    rows = _due(conn, now)
    if not rows:
        return 0
    set_up(conn, [_placement(row) for row in rows], now, limits)
    log.info("%d retried job(s) set up after their backoff", len(rows))
    return len(rows)


def _due(conn: Connection, now: datetime) -> list[RowMapping]:
    stmt = (
        select(jobs)
        .where(
            jobs.c.state == JobState.DEFINED.value,
            jobs.c.retry_at <= now,
            jobs.c.site.is_not(None),
        )
        .order_by(jobs.c.retry_at, jobs.c.id)
        .limit(BATCH)
    )
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    return list(conn.execute(stmt).mappings())


def _placement(row: RowMapping) -> Placement:
    """At the site the retry chose (its brokerage record, if any, is written already)."""
    why = f"backoff of the retry over; site {row['site']} chosen at the retry"
    return Placement(spec_of(row), row["attempt"], row["site"], why)
