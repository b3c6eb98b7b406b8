"""Killing jobs: queued ones are cancelled at once; a running one's pilot is
told through the control exchange, and told again at each heartbeat until it
reports the job ``cancelled``."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Connection, RowMapping, bindparam, update

from broker import topology
from broker.error_codes import ErrorFamily, TaskBufferError
from broker.messaging.publisher import Outgoing
from broker.protocol import PilotCommand, encode
from broker.states import CANCELLABLE_AT_ONCE, FINAL_STATES, HELD_BY_PILOT, JobState
from broker.store import outbox, transitions
from broker.store.schema import jobs
from broker.store.transitions import Change

S = JobState


#: How ``kill`` words a job it cancelled, and (at the end) one whose pilot it told.
DONE_CANCELLED = "cancelled"
PILOT_TOLD = "told to stop it"


def changed(outcome: dict[str, str]) -> list[str]:
    """The jobs of a kill's outcome that it cancelled or whose pilot it told."""
    return [i for i, what in outcome.items() if what == DONE_CANCELLED or what.endswith(PILOT_TOLD)]


def kill(
    conn: Connection, rows: Iterable[RowMapping], reason: str, now: datetime
) -> dict[str, str]:
    """Kill each job; what happened to each (``cancelled``, ``pilot told``, or why not)."""
    outcome: dict[str, str] = {}
    changes, told = [], []
    for row in rows:
        state = JobState(row["state"])
        if state in CANCELLABLE_AT_ONCE:
            changes.append(_cancel(row, reason))
        elif state in HELD_BY_PILOT:
            told.append(row)
        outcome[row["id"]] = "already ended" if state in FINAL_STATES else "moved on meanwhile"
    for change in transitions.apply(conn, changes, now):
        outcome[change.job_id] = DONE_CANCELLED
    _request(conn, told, now)
    outbox.put(conn, kill_commands(told, reason))
    outcome.update({row["id"]: f"pilot {row['pilot_id']} {PILOT_TOLD}" for row in told})
    return outcome


def _cancel(row: RowMapping, reason: str) -> Change:
    return Change(
        row["id"],
        row["attempt"],
        JobState(row["state"]),
        S.CANCELLED,
        reason=f"killed: {reason}" if reason else "killed",
        values={
            "error_family": ErrorFamily.TASKBUFFER.value,
            "error_code": int(TaskBufferError.KILLED),
            "diagnostic": reason or None,
        },
    )


def _request(conn: Connection, rows: list[RowMapping], now: datetime) -> None:
    if rows:
        conn.execute(
            update(jobs).where(jobs.c.id == bindparam("b_id")).values(kill_requested_at=now),
            [{"b_id": row["id"]} for row in rows],
        )


def kill_commands(rows: Iterable[RowMapping], reason: str = "") -> list[Outgoing]:
    """A kill command to the pilot of each job (not mandatory: the pilot may be gone)."""
    return [
        Outgoing(
            topology.CONTROL_EXCHANGE,
            topology.control_routing_key(row["site"], row["pilot_id"]),
            encode(PilotCommand("kill", row["id"], row["attempt"], reason)),
            persistent=False,
            mandatory=False,
        )
        for row in rows
        if row["pilot_id"]
    ]
