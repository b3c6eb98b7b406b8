"""Job and task endings, told to whoever follows them.

Each job that a transaction leaves in a final state (a retry in the same
transaction starts a new attempt, so that job is not final) gets a
``JobEnding`` in the outbox, written in that transaction; a task whose last
live job ended gets its stored status and a ``TaskEnding``. The moves are noted
as they are applied (``transitions.apply``, ``jobs.insert_new``) and written
when the transaction commits (``engine.transaction``), so no ending is missed
and none is told twice for the same attempt.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import BindParameter, Connection, bindparam, func, select, update

from broker import topology
from broker.api import JobEnding, TaskEnding
from broker.messaging.publisher import Outgoing
from broker.protocol import encode
from broker.states import FINAL_STATES, JobState
from broker.store import outbox
from broker.store.clock import iso
from broker.store.datasets import chunks
from broker.store.schema import jobs, tasks

_NOTED = "pandamq.endings"
#: Final states as literals in the SQL, so that the partial index of live jobs is
#: chosen by every plan, generic ones included.
_FINALS: BindParameter[list[str]] = bindparam(
    "finals", sorted(FINAL_STATES), expanding=True, literal_execute=True
)


def noted(conn: Connection, job_ids: Iterable[str]) -> None:
    """Remember jobs that moved to a final state in this transaction."""
    ids = set(job_ids)
    if ids:
        conn.info.setdefault(_NOTED, set()).update(ids)


def forget(conn: Connection) -> None:
    """Drop what was noted (the transaction rolled back). A connection lost in the
    transaction has nothing to drop (its ``info`` went with it), and asking it for
    ``info`` would raise, hiding the error that lost it."""
    if not conn.invalidated:
        conn.info.pop(_NOTED, None)


def flush(conn: Connection, now: datetime) -> None:
    """Write the endings of the jobs noted that are final now, and of their tasks."""
    noted_ids = conn.info.pop(_NOTED, None)
    if not noted_ids:
        return
    ended = _final_jobs(conn, sorted(noted_ids))
    messages = [_job_message(row) for row in ended]
    task_ids = {row["task_id"] for row in ended if row["task_id"]}
    messages += [_task_message(t) for t in _end_tasks(conn, task_ids, now)]
    outbox.put(conn, messages)


def _final_jobs(conn: Connection, ids: list[str]) -> list[Any]:
    """The rows of ``ids`` that are final now, read by their primary key alone (with the
    final states in the query too, a plan on a new database read every final job)."""
    columns = [jobs.c[name] for name in _ENDING_COLUMNS]
    found: list[Any] = []
    for part in chunks(ids):
        rows = conn.execute(select(*columns).where(jobs.c.id.in_(part))).mappings()
        found += [row for row in rows if row["state"] in FINAL_STATES]
    return found


_ENDING_COLUMNS = (
    "id",
    "attempt",
    "state",
    "modified_at",
    "owner",
    "task_id",
    "site",
    "exit_code",
    "error_family",
    "error_code",
    "diagnostic",
)


def _job_message(row: Any) -> Outgoing:
    ending = JobEnding(
        job_id=row["id"],
        attempt=row["attempt"],
        state=row["state"],
        at=iso(row["modified_at"]),
        owner=row["owner"],
        task_id=row["task_id"],
        site=row["site"],
        exit_code=row["exit_code"],
        error_family=row["error_family"],
        error_code=row["error_code"],
        diagnostic=row["diagnostic"],
    )
    key = topology.job_ending_key(row["owner"], row["task_id"], row["id"])
    return Outgoing(topology.ENDINGS_EXCHANGE, key, encode(ending), mandatory=False)


def _end_tasks(conn: Connection, task_ids: set[str], now: datetime) -> list[TaskEnding]:
    """Tasks among ``task_ids`` with no live job left: their status stored, once."""
    if not task_ids:
        return []
    live = select(jobs.c.task_id).where(
        jobs.c.task_id.in_(sorted(task_ids)), jobs.c.state.not_in(_FINALS)
    )
    done = task_ids - {r.task_id for r in conn.execute(live.distinct())}
    return [e for e in (_end_task(conn, t, now) for t in sorted(done)) if e is not None]


def _end_task(conn: Connection, task_id: str, now: datetime) -> TaskEnding | None:
    stmt = select(jobs.c.state, func.count()).where(jobs.c.task_id == task_id)
    counts: dict[str, int] = {r[0]: r[1] for r in conn.execute(stmt.group_by(jobs.c.state))}
    status = task_status(counts)
    ending = (
        update(tasks)
        # A scouting or exhausted task ends too once nothing of it is held (killed).
        .where(tasks.c.id == task_id, tasks.c.status.in_(("running", "scouting", "exhausted")))
        .values(status=status, ended_at=now)
        .returning(tasks.c.owner)
    )
    row = conn.execute(ending).first()
    if row is None:
        return None
    return TaskEnding(task_id, status, iso(now), row.owner, dict(sorted(counts.items())))


def _task_message(ending: TaskEnding) -> Outgoing:
    key = topology.task_ending_key(ending.owner, ending.task_id)
    return Outgoing(topology.ENDINGS_EXCHANGE, key, encode(ending), mandatory=False)


def task_status(counts: dict[str, int]) -> str:
    """PanDA's task status: running; then done (every job finished), finished (some
    failed) or failed (none finished)."""
    if not counts or any(s not in FINAL_STATES for s in counts):
        return "running"
    finished = counts.get(JobState.FINISHED, 0)
    if finished == sum(counts.values()):
        return "done"
    return "finished" if finished else "failed"
