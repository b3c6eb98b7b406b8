"""Site statuses in SQL: who set each and why, their history, and what the automatic
rule and the task exclusions count (docs/brokerage.md, "Failing sites left out")."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, func, insert, select, update

from broker.brokerage.exclusion import Outcomes
from broker.states import JobState
from broker.store.clock import as_utc, iso_times
from broker.store.schema import job_attempts, jobs, pilots, site_status_changes, sites

S = JobState

#: Ended attempts that say how a site runs jobs.
ENDED = (S.FAILED.value, S.FINISHED.value)
#: States a job reaches once its payload started.
STARTED = (S.STARTING, S.RUNNING, S.HOLDING, S.TRANSFERRING, S.FINISHED)


@dataclass(frozen=True)
class StatusChange:
    """A site's status set from ``before`` (compare-and-set) to ``status``, by whom and why."""

    site: str
    before: str
    status: str
    by: str | None
    reason: str | None
    probe_at: datetime | None = None
    #: The ``probe_at`` the site had when judged (compare-and-set with ``before``).
    probe_at_before: datetime | None = None


def change_status(conn: Connection, change: StatusChange, at: datetime) -> bool:
    """Apply ``change`` if the site is still as it was judged; record it in the history."""
    values: dict[str, Any] = {
        "status": change.status,
        "status_by": change.by,
        "status_reason": change.reason,
        "probe_at": change.probe_at,
        "modified_at": at,
    }
    if change.status != change.before:
        values["status_at"] = at
    stmt = (
        update(sites)
        .where(
            sites.c.name == change.site,
            sites.c.status == change.before,
            sites.c.probe_at.is_not_distinct_from(change.probe_at_before),
        )
        .values(**values)
    )
    if conn.execute(stmt).rowcount != 1:
        return False
    conn.execute(
        insert(site_status_changes).values(
            site=change.site,
            from_status=change.before,
            to_status=change.status,
            at=at,
            status_by=change.by,
            reason=change.reason,
        )
    )
    return True


def status_history(conn: Connection, site: str, limit: int = 20) -> list[dict[str, Any]]:
    """The last status changes of a site, newest first."""
    stmt = (
        select(site_status_changes)
        .where(site_status_changes.c.site == site)
        .order_by(site_status_changes.c.id.desc())
        .limit(limit)
    )
    return [iso_times(dict(r)) for r in conn.execute(stmt).mappings()]


def statuses(conn: Connection) -> list[dict[str, Any]]:
    """Every site's status, who set it, why, since when, and ``probe_at``."""
    stmt = select(
        sites.c.name,
        sites.c.status,
        sites.c.status_by,
        sites.c.status_reason,
        sites.c.status_at,
        sites.c.probe_at,
    ).order_by(sites.c.name)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def outcomes_since(conn: Connection, cutoff: datetime) -> dict[str, tuple[int, int]]:
    """Each site's (failed, finished) attempts ended after ``cutoff`` and after the time
    the site is judged from (``probe_at`` in test, else its last status change)."""
    since = func.coalesce(sites.c.probe_at, sites.c.status_at)
    stmt = (
        select(job_attempts.c.site, job_attempts.c.state, func.count())
        .join(sites, sites.c.name == job_attempts.c.site)
        .where(
            job_attempts.c.state.in_(ENDED),
            job_attempts.c.ended_at >= cutoff,
            since.is_(None) | (job_attempts.c.ended_at >= since),
        )
        .group_by(job_attempts.c.site, job_attempts.c.state)
    )
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for site, state, n in conn.execute(stmt):
        counts[site][0 if state == S.FAILED.value else 1] += n
    return {site: (f, s) for site, (f, s) in counts.items()}


def idle_jobs(conn: Connection, cutoff: datetime) -> dict[str, int]:
    """Jobs activated before ``cutoff`` at each site where no pilot claimed since."""
    busy = select(pilots.c.site).where(pilots.c.last_seen >= cutoff)
    stmt = (
        select(jobs.c.site, func.count())
        .where(
            jobs.c.state == S.ACTIVATED.value, jobs.c.modified_at < cutoff, jobs.c.site.not_in(busy)
        )
        .group_by(jobs.c.site)
    )
    return {site: n for site, n in conn.execute(stmt)}


def stuck_jobs(conn: Connection, cutoff: datetime) -> dict[str, int]:
    """Jobs sent to a pilot before ``cutoff`` at each site where no job started since."""
    # (a NULL in a NOT IN list would make it match nothing)
    started = select(jobs.c.site).where(
        jobs.c.state.in_([s.value for s in STARTED]),
        jobs.c.modified_at >= cutoff,
        jobs.c.site.is_not(None),
    )
    stmt = (
        select(jobs.c.site, func.count())
        .where(
            jobs.c.state == S.SENT.value,
            jobs.c.modified_at < cutoff,
            jobs.c.site.not_in(started),
        )
        .group_by(jobs.c.site)
    )
    return {site: n for site, n in conn.execute(stmt)}


def task_outcomes(conn: Connection, task_id: str, cutoff: datetime) -> dict[str, Outcomes]:
    """When the attempts of a task's jobs ended after ``cutoff``, failed or finished, by site."""
    stmt = _ended(cutoff).with_only_columns(
        job_attempts.c.site, job_attempts.c.state, job_attempts.c.ended_at
    )
    return _outcomes(conn.execute(stmt.where(jobs.c.task_id == task_id)))


def site_task_outcomes(conn: Connection, site: str, cutoff: datetime) -> dict[str, Outcomes]:
    """When the attempts at ``site`` ended after ``cutoff``, failed or finished, by task."""
    stmt = _ended(cutoff).with_only_columns(
        jobs.c.task_id, job_attempts.c.state, job_attempts.c.ended_at
    )
    return _outcomes(
        conn.execute(stmt.where(job_attempts.c.site == site, jobs.c.task_id.is_not(None)))
    )


def _ended(cutoff: datetime) -> Select[Any]:
    return (
        select(job_attempts.c.job_id)
        .join(jobs, jobs.c.id == job_attempts.c.job_id)
        .where(job_attempts.c.state.in_(ENDED), job_attempts.c.ended_at >= cutoff)
    )


def _outcomes(rows: Iterable[Any]) -> dict[str, Outcomes]:
    times: dict[str, tuple[list[datetime], list[datetime]]] = defaultdict(lambda: ([], []))
    for key, state, ended_at in rows:
        times[key][0 if state == S.FAILED.value else 1].append(as_utc(ended_at))
    return {key: Outcomes(tuple(f), tuple(s)) for key, (f, s) in times.items()}
