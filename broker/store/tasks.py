"""Tasks in SQL: create them with their output and log datasets, and read their
progress for people."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, func, select

from broker.errors import NotFound
from broker.protocol import TaskSpec
from broker.states import FINAL_STATES, JobState
from broker.store.clock import iso_times
from broker.store.datasets import ensure_dataset
from broker.store.endings import task_status
from broker.store.schema import dataset_contents, datasets, jobs, tasks

if TYPE_CHECKING:
    from broker.operations.scouts import Plan

#: The columns of a task that people see.
PUBLIC_FIELDS = ("id", "name", "status", "created_at", "ended_at", "owner")
#: What people see of a task's scouts and tuning (docs/reliability.md).
TUNING_FIELDS = ("scouts", "tuning", "reason")
#: Statuses stored by the service rather than worked out from the jobs' states.
HELD_STATUSES = ("scouting", "exhausted")


def taken_datasets(conn: Connection, spec: TaskSpec) -> list[str]:
    """Which of the task's output and log datasets exist already (a task needs new ones)."""
    wanted = [spec.output_dataset, spec.log_dataset]
    found = {
        r.name for r in conn.execute(select(datasets.c.name).where(datasets.c.name.in_(wanted)))
    }
    return [name for name in wanted if name in found]


def insert_task(
    conn: Connection,
    spec: TaskSpec,
    now: datetime,
    owner: str | None = None,
    plan: Plan | None = None,
) -> None:
    """Record a task as it is split into jobs (its scouts as ``plan`` says), with its
    (open, empty) output and log datasets."""
    conn.execute(
        tasks.insert().values(
            id=spec.id,
            name=spec.name,
            status="running" if plan is None else plan.status,
            created_at=now,
            spec=dataclasses.asdict(spec),
            owner=owner,
            scouts=0 if plan is None else plan.scouts,
            reason=(plan.note or None) if plan is not None else None,
        )
    )
    ensure_dataset(conn, spec.output_dataset, "output", now, task_id=spec.id)
    ensure_dataset(conn, spec.log_dataset, "log", now, task_id=spec.id)


def task_specs(conn: Connection, task_ids: Iterable[str]) -> dict[str, TaskSpec]:
    """The spec of each of ``task_ids`` that is a task with a spec."""
    wanted = set(task_ids)
    if not wanted:
        return {}
    rows = conn.execute(select(tasks.c.id, tasks.c.spec).where(tasks.c.id.in_(wanted)))
    return {r.id: TaskSpec(**r.spec) for r in rows if r.spec}


def list_tasks(
    conn: Connection, limit: int = 1000, owner: str | None = None
) -> list[dict[str, Any]]:
    """Tasks (of ``owner``), newest first, each with its progress."""
    stmt = select(tasks).order_by(tasks.c.created_at.desc()).limit(limit)
    if owner is not None:
        stmt = stmt.where(tasks.c.owner == owner)
    return [_with_progress(conn, row) for row in conn.execute(stmt).mappings()]


def get_task(conn: Connection, task_id: str) -> dict[str, Any]:
    """One task with its spec and progress, or ``NotFound``."""
    row = conn.execute(select(tasks).where(tasks.c.id == task_id)).mappings().first()
    if row is None:
        raise NotFound(f"no task {task_id!r}")
    task = _with_progress(conn, row)
    if row["spec"]:
        task |= _outputs(conn, TaskSpec(**row["spec"]))
    task["spec"] = row["spec"]
    return task


def _outputs(conn: Connection, spec: TaskSpec) -> dict[str, Any]:
    """The task's output dataset (its state and number of files) and its log dataset."""
    state = conn.execute(
        select(datasets.c.state).where(datasets.c.name == spec.output_dataset)
    ).scalar()
    count = conn.execute(
        select(func.count()).where(dataset_contents.c.dataset == spec.output_dataset)
    ).scalar()
    return {
        "output_dataset": spec.output_dataset,
        "output_dataset_state": state,
        "output_files": count or 0,
        "log_dataset": spec.log_dataset,
    }


def _with_progress(conn: Connection, row: Any) -> dict[str, Any]:
    """The task's public fields, jobs per state, files done and failed, and its status."""
    stmt = select(jobs.c.state, jobs.c.spec).where(jobs.c.task_id == row["id"])
    states: Counter[str] = Counter()
    files: Counter[str] = Counter()
    for state, spec in conn.execute(stmt):
        states[state] += 1
        files[_file_outcome(state)] += len(spec.get("input_files", []))
    task = iso_times({k: row[k] for k in PUBLIC_FIELDS})
    if row["status"] not in HELD_STATUSES:
        task["status"] = task_status(dict(states))
    task |= {k: row[k] for k in TUNING_FIELDS}
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


def reopen(conn: Connection, task_ids: Iterable[str]) -> None:
    """Tasks that had ended and whose jobs were retried by hand are running again
    (a scouting or exhausted task keeps its status: ``broker.operations.scouting``)."""
    wanted = sorted(set(task_ids))
    if wanted:
        conn.execute(
            tasks.update()
            .where(tasks.c.id.in_(wanted), tasks.c.status.in_(("done", "finished", "failed")))
            .values(status="running", ended_at=None)
        )


def owners_of(conn: Connection, task_ids: Iterable[str]) -> dict[str, str | None]:
    """The owner of each of ``task_ids`` that is a task."""
    wanted = sorted(set(task_ids))
    if not wanted:
        return {}
    rows = conn.execute(select(tasks.c.id, tasks.c.owner).where(tasks.c.id.in_(wanted)))
    return {r.id: r.owner for r in rows}
