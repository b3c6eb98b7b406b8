"""Apply job state changes: legal ones with a compare-and-set, illegal ones refused.

Every applied change updates the job row only if it is still in the expected
state and attempt (so concurrent broker processes never both win), appends
a row to the job's history, and mirrors the state on its attempt. Changes are
applied in bulk inside the caller's transaction: one statement per (from, to)
group and set of columns, which on PostgreSQL also writes the changes' values;
a job's changes that follow one another (a pilot's events of one batch) are
written to its row at once. So the changes of a batch write a job's row once, and
its attempt's once (what an ended attempt used is written apart, by
``broker.store.measures``); every change keeps its history row.
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
from broker.store.bulk import insert_each, update_each, update_matching
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
    for round_ in _rounds(_moves([c for c in changes if _legal(c)])):
        steps = {move.job_id: chain for move, chain in round_}
        for (frm, to), group in _grouped([move for move, _ in round_]).items():
            for move in _compare_and_set(conn, frm, to, group, now):
                applied += steps[move.job_id]
    _record(conn, applied, now)
    endings.noted(conn, (c.job_id for c in applied if is_final(c.to_state)))
    hooks.applied(conn, applied, now)
    return applied


#: A job's changes that follow one another, and the one change that writes them.
Move = tuple[Change, list[Change]]


def _moves(changes: list[Change]) -> list[Move]:
    """Join each job's changes that follow one another (each from the state the one
    before leaves it in, as the changes of a batch of a pilot's events do) into one
    write of its row: from the first's state to the last's, with all their values
    (a later one's winning); each keeps its history row."""
    chains: list[list[Change]] = []
    last: dict[str, list[Change]] = {}
    for change in changes:
        chain = last.get(change.job_id)
        if chain and (chain[-1].to_state, chain[-1].attempt) == (
            change.from_state,
            change.attempt,
        ):
            chain.append(change)
            continue
        last[change.job_id] = [change]
        chains.append(last[change.job_id])
    return [(_joined(chain), chain) for chain in chains]


def _joined(chain: list[Change]) -> Change:
    if len(chain) == 1:
        return chain[0]
    values: dict[str, Any] = {}
    for change in chain:
        values |= change.values
    first, end = chain[0], chain[-1]
    return Change(first.job_id, first.attempt, first.from_state, end.to_state, values=values)


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


def _rounds(moves: list[Move]) -> list[list[Move]]:
    """Split so that a job's second move is applied after its first."""
    rounds: list[list[Move]] = []
    depth: dict[str, int] = defaultdict(int)
    for move in moves:
        level = depth[move[0].job_id]
        depth[move[0].job_id] += 1
        if level == len(rounds):
            rounds.append([])
        rounds[level].append(move)
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
    """Move the jobs of ``group`` that are still ``frm`` in their attempt to ``to``, with
    their changes' values; the attempts' rows are written by :func:`_record`."""
    if conn.dialect.name == "postgresql":
        won = _matched_and_set(conn, frm, to, group, now)
    else:
        won = _matched(conn, frm, to, group, now)
        _set_values(conn, [c for c in group if c.job_id in won and c.values])
    return [c for c in group if c.job_id in won]


def _matched_and_set(
    conn: Connection, frm: JobState, to: JobState, group: list[Change], now: datetime
) -> set[str]:
    """PostgreSQL: the compare-and-set and the values in one statement per set of
    columns, so that each job row is written once (its state is in indexes: every
    write of the row is a new version in each of them)."""
    rows = [
        {"id": c.job_id, "attempt": c.attempt, "state": frm.value} | _values(jobs, c) for c in group
    ]
    won: set[str] = set()
    for part in chunks(rows, CAS_CHUNK):
        won |= update_matching(
            conn,
            jobs,
            ("id", "attempt", "state"),
            part,
            also={"state": to.value, "modified_at": now},
            returning="id",
        )
    return won


def _matched(
    conn: Connection, frm: JobState, to: JobState, group: list[Change], now: datetime
) -> set[str]:
    """Elsewhere (SQLite): the compare-and-set alone, an ``IN`` list a slice (a task's
    jobs move together, and the list takes a parameter for each)."""
    won: set[str] = set()
    for part in chunks([(c.job_id, c.attempt) for c in group], CAS_CHUNK):
        stmt = (
            update(jobs)
            .where(attempts_in(conn, part, [frm.value]))
            .values(state=to.value, modified_at=now)
            .returning(jobs.c.id)
        )
        won |= {row.id for row in conn.execute(stmt)}
    return won


def _set_values(conn: Connection, changes: list[Change]) -> None:
    """Write each change's extra column values into its job's row."""
    rows = [
        {"id": c.job_id, "attempt": c.attempt} | values
        for c in changes
        if (values := _values(jobs, c))
    ]
    update_each(conn, jobs, ("id", "attempt"), rows)


def _values(table: Table, change: Change) -> dict[str, Any]:
    """The values ``change`` carries for columns of ``table``."""
    return {k: v for k, v in change.values.items() if k in table.c}


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
    """The history rows, and each attempt's row once: its state as the changes leave it,
    with their values (a later change's winning)."""
    if not applied:
        return
    # COPY on PostgreSQL: an executemany of INSERT ran one statement per row (5.5 a job).
    insert_each(conn, job_transitions, history(applied, now))
    attempts: dict[tuple[str, int], dict[str, Any]] = {}
    for c in applied:
        row = attempts.setdefault((c.job_id, c.attempt), {"job_id": c.job_id, "attempt": c.attempt})
        row |= _values(job_attempts, c)
        row |= {"state": c.to_state.value, "ended_at": now if is_final(c.to_state) else None}
    update_each(conn, job_attempts, ("job_id", "attempt"), list(attempts.values()))
