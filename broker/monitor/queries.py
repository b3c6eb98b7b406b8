"""The monitor's reads. Each is one indexed statement: no full scan of jobs per page.

Active jobs are counted whatever their age; final ones only within the
window asked for (as PanDA's monitor does), so a page costs what is recent,
not what is old.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select, union

from broker.states import FINAL_STATES, HELD_BY_PILOT, JobState
from broker.store.clock import iso_times
from broker.store.jobs import PUBLIC_FIELDS
from broker.store.schema import job_attempts, jobs, pilots

ACTIVE_STATES = [s.value for s in JobState if s not in FINAL_STATES]
FINAL = [s.value for s in JobState if s in FINAL_STATES]
NO_SITE = "-"


def active_counts(conn: Connection) -> dict[tuple[str, str], int]:
    """Jobs in each (site, state) that is not final."""
    stmt = (
        select(jobs.c.site, jobs.c.state, func.count())
        .where(jobs.c.state.in_(ACTIVE_STATES))
        .group_by(jobs.c.site, jobs.c.state)
    )
    return {(site or NO_SITE, state): n for site, state, n in conn.execute(stmt)}


def site_state_counts(conn: Connection, since: datetime) -> dict[tuple[str, str], int]:
    """Active jobs, and jobs that became final after ``since``, per (site, state)."""
    final = (
        select(jobs.c.site, jobs.c.state, func.count())
        .where(jobs.c.state.in_(FINAL), jobs.c.modified_at >= since)
        .group_by(jobs.c.site, jobs.c.state)
    )
    counts = active_counts(conn)
    counts.update({(site or NO_SITE, state): n for site, state, n in conn.execute(final)})
    return counts


def queue_depth(conn: Connection) -> dict[tuple[str, str], int]:
    """Activated jobs waiting for a pilot, per (site, resource type)."""
    stmt = (
        select(jobs.c.site, jobs.c.resource_type, func.count())
        .where(jobs.c.state == JobState.ACTIVATED.value)
        .group_by(jobs.c.site, jobs.c.resource_type)
    )
    return {(site or NO_SITE, rtype): n for site, rtype, n in conn.execute(stmt)}


def pilots_alive(conn: Connection, seen_since: datetime) -> dict[str, int]:
    """Pilots per site that claimed since ``seen_since`` or hold a job now."""
    seen = select(pilots.c.site, pilots.c.id.label("pilot_id")).where(
        pilots.c.last_seen >= seen_since
    )
    holding = select(jobs.c.site, jobs.c.pilot_id).where(
        jobs.c.state.in_(HELD_BY_PILOT), jobs.c.pilot_id.is_not(None)
    )
    both = union(seen, holding).subquery()
    stmt = select(both.c.site, func.count()).group_by(both.c.site)
    return {site or NO_SITE: n for site, n in conn.execute(stmt)}


def _failed_since(since: datetime, site: str | None) -> list[Any]:
    """The WHERE of failed attempts that ended after ``since`` (at ``site``)."""
    where = [job_attempts.c.state == JobState.FAILED.value, job_attempts.c.ended_at >= since]
    if site is not None:
        where.append(job_attempts.c.site == site)
    return where


def error_groups(
    conn: Connection, since: datetime, site: str | None = None
) -> list[dict[str, Any]]:
    """Failed attempts grouped by error family, code, exit code and diagnostic."""
    a = job_attempts.c
    stmt = (
        select(
            a.error_family,
            a.error_code,
            a.exit_code,
            a.diagnostic,
            func.count().label("count"),
            func.min(a.job_id).label("first_job"),
            func.max(a.job_id).label("last_job"),
        )
        .where(*_failed_since(since, site))
        .group_by(a.error_family, a.error_code, a.exit_code, a.diagnostic)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


def recent_failures(
    conn: Connection, since: datetime, limit: int = 10, site: str | None = None
) -> list[dict[str, Any]]:
    """The last failed attempts, newest first."""
    a = job_attempts.c
    stmt = (
        select(a.job_id, a.attempt, a.site, a.error_family, a.error_code, a.exit_code)
        .add_columns(a.diagnostic, a.ended_at)
        .where(*_failed_since(since, site))
        .order_by(a.ended_at.desc())
        .limit(limit)
    )
    return [iso_times(dict(r)) for r in conn.execute(stmt).mappings()]


def task_counts(conn: Connection, task_id: str) -> dict[str, int]:
    """A task's jobs per state."""
    stmt = (
        select(jobs.c.state, func.count()).where(jobs.c.task_id == task_id).group_by(jobs.c.state)
    )
    return {state: n for state, n in conn.execute(stmt)}


def job_list(
    conn: Connection,
    state: str,
    site: str | None = None,
    task: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """The last jobs to reach ``state`` (at ``site``, of ``task``), newest first."""
    stmt = (
        select(*(jobs.c[f] for f in PUBLIC_FIELDS))
        .where(jobs.c.state == state)
        .order_by(jobs.c.modified_at.desc())
        .limit(limit)
    )
    if site is not None:
        stmt = stmt.where(jobs.c.site == (None if site == NO_SITE else site))
    if task is not None:
        stmt = stmt.where(jobs.c.task_id == task)
    return [iso_times(dict(r)) for r in conn.execute(stmt).mappings()]


def by_site(counts: dict[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    """``{(site, state): n}`` as ``{site: {state: n}}``."""
    table: dict[str, dict[str, int]] = defaultdict(dict)
    for (site, state), n in sorted(counts.items()):
        table[site][state] = n
    return dict(table)
