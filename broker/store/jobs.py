"""Jobs in SQL: create them, load them for handlers, read them for people."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, RowMapping, Table, func, select

from broker.errors import NotFound
from broker.protocol import JobSpec, fields_of
from broker.states import JobState, is_final
from broker.store import endings, hooks, transitions
from broker.store.bulk import insert_each
from broker.store.clock import iso_times, iso_utc
from broker.store.schema import job_attempts, job_transitions, jobs, tasks
from broker.store.transitions import Change
from broker.topology import resource_type


@dataclasses.dataclass
class NewJob:
    """A job to insert with its first attempt: its spec, its owner, the moves it made
    from ``defined`` before it was first written (none: it is inserted ``defined``), and
    its priority when its user's fair share sets one (``broker.operations.fairshare``)."""

    spec: JobSpec
    owner: str | None = None
    moves: list[Change] = dataclasses.field(default_factory=list)
    priority: int | None = None

    @property
    def state(self) -> JobState:
        """The state its moves leave it in."""
        return self.moves[-1].to_state if self.moves else JobState.DEFINED

    def move(self, to: JobState, reason: str, values: Mapping[str, Any] | None = None) -> None:
        """One more move of its first attempt, from the state it is in."""
        move = Change(self.spec.id, 1, self.state, to, reason=reason, values=values or {})
        self.moves.append(move)

    def values(self) -> dict[str, Any]:
        """The columns its moves set: a site, the brokerage record, an error."""
        return {k: v for move in self.moves for k, v in move.values.items()}


def insert_defined(
    conn: Connection,
    specs: Sequence[JobSpec],
    now: datetime,
    owners: Mapping[str, str | None] | None = None,
) -> None:
    """Create jobs in state ``defined`` with their first attempt and history row."""
    owner = owners or {}
    insert_new(conn, [NewJob(s, owner.get(s.id)) for s in specs], now)


def insert_new(conn: Connection, new: Sequence[NewJob], now: datetime) -> None:
    """Insert jobs in the state their moves leave them in, each written once, with its
    first attempt and its history: ``defined`` (submitted), then one row per move."""
    if not new:
        return
    values = [n.values() for n in new]
    written = list(zip(new, values, strict=True))
    _insert(conn, jobs, [_job_row(n, now) | _state_row(jobs, n, v, now) for n, v in written])
    _insert(conn, job_attempts, [_attempt_row(n, v, now) for n, v in written])
    moves = [move for n in new for move in n.moves]
    history = [_submitted(n.spec, now) for n in new] + transitions.history(moves, now)
    insert_each(conn, job_transitions, history)
    endings.noted(conn, (n.spec.id for n in new if is_final(n.state)))
    hooks.stored([(v.get("site"), move) for n, v in written for move in n.moves])


def _state_row(
    table: Table, new: NewJob, values: Mapping[str, Any], now: datetime
) -> dict[str, Any]:
    """The state of a new job's row in ``table`` (``jobs`` or ``job_attempts``), and
    the columns of that table its moves set (``values``)."""
    row = {"state": new.state.value} | {k: v for k, v in values.items() if k in table.c}
    if table is job_attempts:
        row["ended_at"] = now if is_final(new.state) else None
    return row


def _attempt_row(new: NewJob, values: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    first = {"job_id": new.spec.id, "attempt": 1, "created_at": now}
    return first | _state_row(job_attempts, new, values, now)


def _submitted(spec: JobSpec, now: datetime) -> dict[str, Any]:
    """A new job's first history row."""
    return {
        "job_id": spec.id,
        "attempt": 1,
        "from_state": None,
        "to_state": JobState.DEFINED.value,
        "at": now,
        "event_id": None,
        "reason": "submitted",
    }


def _insert(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows``, one statement for each set of columns they give."""
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_columns[tuple(sorted(row))].append(row)
    for group in by_columns.values():
        insert_each(conn, table, group)


def _job_row(new: NewJob, now: datetime) -> dict[str, Any]:
    spec = new.spec
    return {
        "id": spec.id,
        "task_id": spec.task_id,
        "name": spec.name,
        "site": None,
        "resource_type": resource_type(spec.cores, spec.memory_mb),
        "attempt": 1,
        "priority": spec.priority if new.priority is None else new.priority,
        "base_priority": spec.priority,
        "max_attempts": spec.max_attempts,
        "spec": fields_of(spec),
        "activity": spec.activity,
        "created_at": now,
        "modified_at": now,
        "owner": new.owner,
    }


def owners_of(conn: Connection, ids: Iterable[str]) -> dict[str, str | None]:
    """The owner of each of ``ids`` that is a job."""
    wanted = sorted(set(ids))
    found: dict[str, str | None] = {}
    for start in range(0, len(wanted), 500):
        stmt = select(jobs.c.id, jobs.c.owner).where(jobs.c.id.in_(wanted[start : start + 500]))
        found |= {r.id: r.owner for r in conn.execute(stmt)}
    return found


def known_tasks(conn: Connection, ids: Iterable[str]) -> set[str]:
    """Which of ``ids`` are tasks."""
    wanted = set(ids)
    if not wanted:
        return set()
    return {r.id for r in conn.execute(select(tasks.c.id).where(tasks.c.id.in_(wanted)))}


def load(conn: Connection, ids: Iterable[str], lock: bool = False) -> dict[str, RowMapping]:
    """Job rows by id, for handlers.

    With ``lock``, the rows stay locked until the transaction ends, taken in id
    order so that two broker processes locking overlapping batches cannot
    deadlock; the second one then reads the first one's result. (SQLite's
    ``BEGIN IMMEDIATE`` already serialises writers.)
    """
    wanted = set(ids)
    if not wanted:
        return {}
    stmt = select(jobs).where(jobs.c.id.in_(wanted))
    if lock and conn.dialect.name == "postgresql":
        stmt = stmt.order_by(jobs.c.id).with_for_update()
    return {r["id"]: r for r in conn.execute(stmt).mappings()}


def spec_of(row: RowMapping) -> JobSpec:
    """The stored spec of a job row."""
    return JobSpec(**row["spec"])


def list_jobs(
    conn: Connection,
    site: str | None = None,
    state: str | None = None,
    task: str | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Jobs, newest first, filtered."""
    stmt = select(jobs).order_by(jobs.c.created_at.desc(), jobs.c.id).limit(limit)
    for column, value in ((jobs.c.site, site), (jobs.c.state, state), (jobs.c.task_id, task)):
        if value is not None:
            stmt = stmt.where(column == value)
    return [public(r) for r in conn.execute(stmt).mappings()]


def get_job(conn: Connection, job_id: str) -> dict[str, Any]:
    """One job with its attempts and every transition, or ``NotFound``."""
    row = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
    if row is None:
        raise NotFound(f"no job {job_id!r}")
    job = public(row)
    job["spec"] = dict(row["spec"])
    job["brokerage"] = row["brokerage"]
    job["attempts"] = [
        iso_times(dict(a))
        for a in conn.execute(
            select(job_attempts)
            .where(job_attempts.c.job_id == job_id)
            .order_by(job_attempts.c.attempt)
        ).mappings()
    ]
    job["transitions"] = [
        iso_times(dict(t))
        for t in conn.execute(
            select(
                job_transitions.c.attempt,
                job_transitions.c.from_state,
                job_transitions.c.to_state,
                job_transitions.c.at,
                job_transitions.c.reason,
            )
            .where(job_transitions.c.job_id == job_id)
            .order_by(job_transitions.c.id)
        ).mappings()
    ]
    return job


def counts_by_site_state(conn: Connection) -> dict[tuple[str, str], int]:
    """How many jobs each site has in each state."""
    stmt = select(jobs.c.site, jobs.c.state, func.count()).group_by(jobs.c.site, jobs.c.state)
    return {(site or "-", state): n for site, state, n in conn.execute(stmt)}


def summaries(conn: Connection, ids: Iterable[str]) -> list[tuple[Any, ...]]:
    """Each of ``ids`` that is a job, as people see it: a row of ``PUBLIC_FIELDS``."""
    wanted = sorted(set(ids))
    found: list[tuple[Any, ...]] = []
    columns = public_columns()
    for start in range(0, len(wanted), 500):
        stmt = select(*columns).where(jobs.c.id.in_(wanted[start : start + 500]))
        found += [tuple(row) for row in conn.execute(stmt).all()]
    return found


def states_of(conn: Connection, ids: Iterable[str]) -> dict[str, str]:
    """Current state of each job in ``ids`` that exists."""
    return {job_id: state for job_id, (_, state) in places_of(conn, ids).items()}


def places_of(conn: Connection, ids: Iterable[str]) -> dict[str, tuple[str | None, str]]:
    """(site, state) of each job in ``ids`` that exists."""
    wanted = list(set(ids))
    found: dict[str, tuple[str | None, str]] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        stmt = select(jobs.c.id, jobs.c.site, jobs.c.state).where(jobs.c.id.in_(chunk))
        found.update({r.id: (r.site, r.state) for r in conn.execute(stmt)})
    return found


#: The columns of a job that people see (``pandamq jobs`` and ``pandamq job``).
PUBLIC_FIELDS = (
    "id",
    "name",
    "task_id",
    "site",
    "resource_type",
    "state",
    "attempt",
    "priority",
    "pilot_id",
    "exit_code",
    "error_family",
    "error_code",
    "diagnostic",
    "created_at",
    "modified_at",
    "owner",
)


def public(row: RowMapping) -> dict[str, Any]:
    """A job row as people see it."""
    return iso_times({k: row[k] for k in PUBLIC_FIELDS})


def public_columns() -> list[ColumnElement[Any]]:
    """The columns of ``PUBLIC_FIELDS`` as people see them, the times as ISO 8601 UTC
    strings written by the database: a page of 1,000 jobs goes out as a table of
    these rows, with no dict or datetime made per job in Python."""
    return [
        iso_utc(jobs.c[name]).label(name) if name.endswith("_at") else jobs.c[name]
        for name in PUBLIC_FIELDS
    ]
