"""Metric hooks on the pipeline's one point of change: applied job transitions.

:func:`install`, called as a service starts, hangs them on the store's hooks
(``broker.store.hooks``). ``transitions.apply`` then calls
:func:`transitions_applied` once per batch, inside the batch's transaction, so
every handler and the DDM bridge (claims, events, watchdog, kills, activation,
output registration) are observed the same way. It costs one SELECT per batch
(two when the batch has claims), never one per job. New jobs, inserted in the
state their first moves leave them in, are counted by :func:`new_jobs_stored`,
illegal transitions refused by :func:`transition_refused`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Connection, and_, select

from broker.metrics import (
    DISPATCH_LATENCY,
    HEARTBEATS,
    ILLEGAL_TRANSITIONS,
    JOB_ERRORS,
    PAYLOAD_DURATION,
    QUEUE_WAIT,
    TRANSITIONS,
)
from broker.states import JobState
from broker.store import hooks
from broker.store.clock import as_utc
from broker.store.datasets import chunks
from broker.store.keys import keys_in
from broker.store.schema import job_attempts, job_transitions, jobs

if TYPE_CHECKING:
    from broker.store.transitions import Change

#: The label of a job that has no site yet (before brokerage).
NO_SITE = "-"


def install() -> None:
    """Hang the pipeline's metrics on the store's hooks (once per process; again is harmless)."""
    hooks.register(
        transitions_applied=transitions_applied,
        jobs_stored=new_jobs_stored,
        transition_refused=transition_refused,
    )


def transitions_applied(conn: Connection, applied: Sequence[Change], now: datetime) -> None:
    """Count transitions and errors by site; observe dispatch, queue and payload times."""
    if not applied:
        return
    attempts = _attempts(conn, applied)
    activated_at = _activated_at(conn, [c for c in applied if c.to_state == JobState.SENT])
    for change in applied:
        site, created_at, started_at = attempts.get(change.job_id, (NO_SITE, None, None))
        _count(site, change)
        if change.to_state == JobState.SENT and change.job_id in activated_at:
            DISPATCH_LATENCY.labels(site).observe(_seconds(activated_at[change.job_id], now))
        elif change.to_state == JobState.RUNNING and created_at is not None:
            QUEUE_WAIT.labels(site).observe(_seconds(created_at, now))
        elif change.to_state == JobState.HOLDING and started_at is not None:
            PAYLOAD_DURATION.labels(site).observe(_seconds(started_at, now))


def new_jobs_stored(moves: Iterable[tuple[str | None, Change]]) -> None:
    """Count the moves of new jobs written once in the state they reached, by the site
    each job got (``insert_new`` calls this: nothing to read back, the site is known)."""
    for site, change in moves:
        _count(site or NO_SITE, change)


def _count(site: str, change: Change) -> None:
    """Count one transition, and the error of one that fails a job."""
    TRANSITIONS.labels(site, change.from_state, change.to_state).inc()
    if change.to_state == JobState.FAILED:
        _count_error(site, change)


def transition_refused(change: Change) -> None:
    """Count an illegal transition the store refused."""
    ILLEGAL_TRANSITIONS.labels(from_state=change.from_state, to_state=change.to_state).inc()


def heartbeats_recorded(sites: Iterable[str | None]) -> None:
    """Count heartbeats, by the site of each job."""
    for site in sites:
        HEARTBEATS.labels(site or NO_SITE).inc()


def _count_error(site: str, change: Change) -> None:
    family = change.values.get("error_family") or NO_SITE
    code = change.values.get("error_code")
    JOB_ERRORS.labels(site, family, NO_SITE if code is None else str(code)).inc()


def _seconds(since: datetime, now: datetime) -> float:
    return max(0.0, (as_utc(now) - as_utc(since)).total_seconds())


def _attempts(
    conn: Connection, applied: Sequence[Change]
) -> dict[str, tuple[str, datetime | None, datetime | None]]:
    """Site, attempt creation and start of each changed job's current attempt."""
    stmt = select(
        jobs.c.id, jobs.c.site, job_attempts.c.created_at, job_attempts.c.started_at
    ).join(
        job_attempts,
        and_(job_attempts.c.job_id == jobs.c.id, job_attempts.c.attempt == jobs.c.attempt),
    )
    found: dict[str, tuple[str, datetime | None, datetime | None]] = {}
    for part in chunks(list({c.job_id for c in applied})):
        rows = conn.execute(stmt.where(jobs.c.id.in_(part)))
        found |= {r.id: (r.site or NO_SITE, r.created_at, r.started_at) for r in rows}
    return found


def _activated_at(conn: Connection, claimed: Sequence[Change]) -> dict[str, datetime]:
    """When each claimed attempt was activated."""
    if not claimed:
        return {}
    stmt = select(job_transitions.c.job_id, job_transitions.c.at).where(
        keys_in(
            job_transitions.c.job_id,
            job_transitions.c.attempt,
            ((c.job_id, c.attempt) for c in claimed),
        ),
        job_transitions.c.to_state == JobState.ACTIVATED.value,
    )
    return {r.job_id: r.at for r in conn.execute(stmt)}
