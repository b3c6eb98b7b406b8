"""Tasks in SQL: create them, and read their progress for people."""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from broker.errors import NotFound
from broker.protocol import TaskSpec
from broker.states import FINAL_STATES, JobState
from broker.store.clock import iso_times
from broker.store.schema import jobs, tasks

#: The columns of a task that people see.
PUBLIC_FIELDS = ("id", "name", "status", "created_at")


def insert_task(conn: Connection, spec: TaskSpec, now: datetime) -> None:
    """Record a task as it is split into jobs."""
    conn.execute(
        tasks.insert().values(
            id=spec.id,
            name=spec.name,
            status="running",
            created_at=now,
            spec=dataclasses.asdict(spec),
        )
    )


def list_tasks(conn: Connection, limit: int = 1000) -> list[dict[str, Any]]:
    """Tasks, newest first, each with its progress."""
    rows = conn.execute(select(tasks).order_by(tasks.c.created_at.desc()).limit(limit)).mappings()
    return [_with_progress(conn, row) for row in rows]


def get_task(conn: Connection, task_id: str) -> dict[str, Any]:
    """One task with its spec and progress, or ``NotFound``."""
    row = conn.execute(select(tasks).where(tasks.c.id == task_id)).mappings().first()
    if row is None:
        raise NotFound(f"no task {task_id!r}")
    task = _with_progress(conn, row)
    task["spec"] = row["spec"]
    return task


def _with_progress(conn: Connection, row: Any) -> dict[str, Any]:
    """The task's public fields, jobs per state, files done and failed, and its status."""
    stmt = select(jobs.c.state, jobs.c.spec).where(jobs.c.task_id == row["id"])
    states: Counter[str] = Counter()
    files: Counter[str] = Counter()
    for state, spec in conn.execute(stmt):
        states[state] += 1
        files[_file_outcome(state)] += len(spec.get("input_files", []))
    task = iso_times({k: row[k] for k in PUBLIC_FIELDS})
    task["status"] = _status(states)
    task["jobs"] = sum(states.values())
    task["jobs_by_state"] = dict(sorted(states.items()))
    task["files_done"] = files["done"]
    task["files_failed"] = files["failed"]
    task["files_pending"] = files["pending"]
    return task


def _file_outcome(state: str) -> str:
    if state == JobState.FINISHED:
        return "done"
    return "failed" if state in FINAL_STATES else "pending"


def _status(states: Counter[str]) -> str:
    """PanDA's task status: running; then done (every job finished), finished (some
    failed) or failed (none finished)."""
    if not states or any(s not in FINAL_STATES for s in states):
        return "running"
    finished = states.get(JobState.FINISHED, 0)
    if finished == sum(states.values()):
        return "done"
    return "finished" if finished else "failed"
