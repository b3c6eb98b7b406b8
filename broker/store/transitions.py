"""Apply job state changes: legal ones with a compare-and-set, illegal ones refused.

Every applied change updates the job row only if it is still in the expected
state and attempt (so concurrent broker processes never both win), appends
a row to the job's history, and mirrors the state on its attempt. Changes are
applied in bulk, one statement per (from, to) group, inside the caller's
transaction.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, update

from broker.states import JobState, can_transition, is_final
from broker.store import endings, hooks
from broker.store.bulk import insert_each, update_each
from broker.store.datasets import chunks
from broker.store.keys import attempts_in
from broker.store.schema import job_attempts, job_transitions, jobs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Change:
    """Move one job attempt from ``from_state`` to ``to_state``."""

    job_id: str
    attempt: int
    from_state: JobState
    to_state: JobState
    event_id: str | None = None
    reason: str | None = None
    values: Mapping[str, Any] = field(default_factory=dict)


def apply(conn: Connection, changes: Iterable[Change], now: datetime) -> list[Change]:
    """Apply what is legal and still current; return the changes applied, in order."""
    applied: list[Change] = []
    for round_ in _rounds([c for c in changes if _legal(c)]):
        for (frm, to), group in _grouped(round_).items():
            applied += _compare_and_set(conn, frm, to, group, now)
    _record(conn, applied, now)
    endings.noted(conn, (c.job_id for c in applied if is_final(c.to_state)))
    hooks.applied(conn, applied, now)
    return applied


def _legal(change: Change) -> bool:
    if can_transition(change.from_state, change.to_state):
        return True
    hooks.refused(change)
    log.warning(
        "refused illegal transition of job %s attempt %d: %s -> %s",
        change.job_id,
        change.attempt,
        change.from_state,
        change.to_state,
    )
    return False


def _rounds(changes: list[Change]) -> list[list[Change]]:
    """Split so that a job's second change is applied after its first."""
    rounds: list[list[Change]] = []
    depth: dict[str, int] = defaultdict(int)
    for change in changes:
        level = depth[change.job_id]
        depth[change.job_id] += 1
        if level == len(rounds):
            rounds.append([])
        rounds[level].append(change)
    return rounds


def _grouped(changes: list[Change]) -> dict[tuple[JobState, JobState], list[Change]]:
    groups: dict[tuple[JobState, JobState], list[Change]] = defaultdict(list)
    for change in changes:
        groups[(change.from_state, change.to_state)].append(change)
    return groups


#: Jobs per compare-and-set statement.
CAS_CHUNK = 5000


def _compare_and_set(
    conn: Connection, frm: JobState, to: JobState, group: list[Change], now: datetime
) -> list[Change]:
    won: set[str] = set()
    # In slices: a task's jobs move together, and SQLite's form (an IN list) takes a
    # parameter for each.
    for part in chunks([(c.job_id, c.attempt) for c in group], CAS_CHUNK):
        stmt = (
            update(jobs)
            .where(attempts_in(conn, part, [frm.value]))
            .values(state=to.value, modified_at=now)
            .returning(jobs.c.id)
        )
        won |= {row.id for row in conn.execute(stmt)}
    applied = [c for c in group if c.job_id in won]
    _set_values(conn, jobs, [c for c in applied if c.values])
    _set_values(conn, job_attempts, [c for c in applied if c.values])
    return applied


def _set_values(conn: Connection, table: Table, changes: list[Change]) -> None:
    """Write each change's extra column values into ``table`` (those columns it has)."""
    by_columns: dict[tuple[str, ...], list[Change]] = defaultdict(list)
    for change in changes:
        columns = tuple(sorted(k for k in change.values if k in table.c))
        if columns:
            by_columns[columns].append(change)
    keys = _keys(table)
    for columns, group in by_columns.items():
        rows = [
            {keys[0]: ch.job_id, keys[1]: ch.attempt, **{c: ch.values[c] for c in columns}}
            for ch in group
        ]
        update_each(conn, table, keys, rows)


def _keys(table: Table) -> tuple[str, str]:
    """The columns naming a job attempt's row in ``table``."""
    return ("id", "attempt") if table is jobs else ("job_id", "attempt")


def history(changes: Iterable[Change], now: datetime) -> list[dict[str, Any]]:
    """The ``job_transitions`` rows that record ``changes``."""
    return [
        {
            "job_id": c.job_id,
            "attempt": c.attempt,
            "from_state": c.from_state.value,
            "to_state": c.to_state.value,
            "at": now,
            "event_id": c.event_id,
            "reason": c.reason,
        }
        for c in changes
    ]


def _record(conn: Connection, applied: list[Change], now: datetime) -> None:
    if not applied:
        return
    # COPY on PostgreSQL: an executemany of INSERT ran one statement per row (5.5 a job).
    insert_each(conn, job_transitions, history(applied, now))
    update_each(
        conn,
        job_attempts,
        _keys(job_attempts),
        [
            {
                "job_id": c.job_id,
                "attempt": c.attempt,
                "state": c.to_state.value,
                "ended_at": now if is_final(c.to_state) else None,
            }
            for c in applied
        ],
    )
