"""What each monitor page shows, as plain data: the web pages, their JSON and
``pandamq top`` all read these."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from broker.errors import BadInput, NotFound
from broker.monitor.datasets import job_file_list
from broker.monitor.errors import error_list
from broker.monitor.payload_log import log_tail
from broker.monitor.queries import (
    ACTIVE_STATES,
    FINAL,
    by_site,
    job_list,
    recent_failures,
    site_state_counts,
    task_counts,
)
from broker.monitor.sites import left_out
from broker.states import HELD_BY_PILOT, QUEUED, JobState
from broker.store.clock import iso_times, now
from broker.store.jobs import get_job
from broker.store.schema import tasks
from broker.store.users import usage

#: The columns of the sites x states table, in the order a job walks them.
STATE_COLUMNS = [*ACTIVE_STATES, *FINAL]


def dashboard(conn: Connection, since: datetime, window: str) -> dict[str, Any]:
    """Sites x states (active, and final within the window), ratios, error rate, failures,
    the sites left out (status other than online), and the users with the most queued
    jobs (``broker.store.users.usage``)."""
    table = by_site(site_state_counts(conn, since))
    sites = [_site_row(site, counts) for site, counts in table.items()]
    return {
        "window": window,
        "since": since.isoformat(),
        "states": STATE_COLUMNS,
        "sites": sites,
        "totals": _site_row("total", _sum(table.values())),
        "recent_failures": recent_failures(conn, since),
        "left_out": left_out(conn, now()),
        "users": usage(conn),
    }


def _sum(tables: Any) -> dict[str, int]:
    total: dict[str, int] = {}
    for counts in tables:
        for state, n in counts.items():
            total[state] = total.get(state, 0) + n
    return total


def _site_row(site: str, counts: dict[str, int]) -> dict[str, Any]:
    running = sum(n for s, n in counts.items() if s in HELD_BY_PILOT)
    queued = sum(n for s, n in counts.items() if s in QUEUED)
    finished = counts.get(JobState.FINISHED.value, 0)
    failed = counts.get(JobState.FAILED.value, 0)
    return {
        "site": site,
        "counts": counts,
        "running": running,
        "queued": queued,
        "running_per_queued": round(running / queued, 2) if queued else None,
        "error_rate": round(failed / (finished + failed), 3) if finished + failed else None,
    }


def job_page(conn: Connection, job_id: str) -> dict[str, Any]:
    """A job: its fields, spec, attempts with their errors, history, files and log tail."""
    job = get_job(conn, job_id)
    job["errors"] = [a for a in job["attempts"] if a.get("error_code") or a.get("exit_code")]
    job["files"] = job_file_list(conn, job_id)
    job["log"] = log_tail(conn, job_id)
    return job


def task_page(conn: Connection, task_id: str) -> dict[str, Any]:
    """A task: its fields, its jobs per state and its progress."""
    row = conn.execute(select(tasks).where(tasks.c.id == task_id)).mappings().first()
    if row is None:
        raise NotFound(f"no task {task_id!r}")
    counts = task_counts(conn, task_id)
    total = sum(counts.values())
    done = counts.get(JobState.FINISHED.value, 0)
    return {
        **iso_times(dict(row)),
        "counts": counts,
        "jobs": total,
        "finished": done,
        "progress": round(done / total, 3) if total else None,
    }


def errors_page(conn: Connection, since: datetime, window: str, site: str | None) -> dict[str, Any]:
    """The error list of the window (at one site)."""
    return {
        "window": window,
        "since": since.isoformat(),
        "site": site,
        "errors": error_list(conn, since, site),
    }


def jobs_page(conn: Connection, state: str, site: str | None, task: str | None) -> dict[str, Any]:
    """The last jobs to reach a state (at a site, of a task)."""
    if state not in STATE_COLUMNS:
        raise BadInput(f"no state {state!r}")
    return {
        "state": state,
        "site": site,
        "task": task,
        "jobs": job_list(conn, state, site, task),
    }
