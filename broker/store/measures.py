"""What job attempts used, as their pilots reported it, and a task's jobs read back
for tuning (``broker.operations.tuning``) and its exhaustion."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, and_, func, select

from broker.error_codes import ErrorFamily, PilotError
from broker.operations.tuning import Measure
from broker.states import JobState
from broker.store.bulk import update_each
from broker.store.schema import job_attempts, jobs

#: The columns of an attempt that a pilot's last event fills in.
COLUMNS = ("memory_mb", "peak_rss_mb", "cpu_time_s", "wall_time_s", "output_bytes")

_CURRENT = and_(job_attempts.c.job_id == jobs.c.id, job_attempts.c.attempt == jobs.c.attempt)


def record(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Store each attempt's use: rows of ``job_id``, ``attempt`` and every one of ``COLUMNS``."""
    update_each(conn, job_attempts, ("job_id", "attempt"), rows)


def finished(conn: Connection, task_id: str) -> list[Measure]:
    """What the finished jobs of a task used, each in the attempt that finished."""
    stmt = (
        select(*(job_attempts.c[c] for c in COLUMNS[1:]))
        .join(jobs, _CURRENT)
        .where(jobs.c.task_id == task_id, jobs.c.state == JobState.FINISHED.value)
    )
    return [Measure(**row) for row in conn.execute(stmt).mappings()]


def finished_count(conn: Connection, task_id: str) -> int:
    """How many jobs of a task finished."""
    stmt = select(func.count()).where(
        jobs.c.task_id == task_id, jobs.c.state == JobState.FINISHED.value
    )
    return int(conn.execute(stmt).scalar() or 0)


def out_of_memory_at(conn: Connection, task_id: str, memory_mb: int) -> int:
    """How many jobs of a task had an attempt run out of memory asking ``memory_mb`` or more."""
    stmt = (
        select(func.count(func.distinct(job_attempts.c.job_id)))
        .join(jobs, jobs.c.id == job_attempts.c.job_id)
        .where(
            jobs.c.task_id == task_id,
            job_attempts.c.error_family == ErrorFamily.PILOT.value,
            job_attempts.c.error_code == int(PilotError.OUT_OF_MEMORY),
            job_attempts.c.memory_mb >= memory_mb,
        )
    )
    return int(conn.execute(stmt).scalar() or 0)
