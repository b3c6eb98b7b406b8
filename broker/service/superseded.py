"""Events of attempts that are over: superseded by a later attempt, or ended.

The pilot of such an attempt may still be at work, e.g. after it was frozen
past ``lost_heartbeat_s`` and the watchdog failed the attempt. Its events
change nothing; in answer to a heartbeat or a progress report it is told to
stop (a kill command), and its final event is kept as a report
(``broker.store.reports``), so that the DDM bridge removes the files it
staged. Only the pilot that claimed the attempt is answered.
"""

from __future__ import annotations

import logging

from sqlalchemy import Connection, RowMapping, select

from broker.operations.kills import kill_commands
from broker.protocol import JobEvent
from broker.states import FINAL_STATES, JobState
from broker.store import outbox
from broker.store.keys import keys_in
from broker.store.schema import job_attempts

log = logging.getLogger(__name__)

#: Event kinds after which the pilot has nothing more to do with the attempt.
ENDINGS = frozenset({"finished", "failed", "cancelled"})


def over(event: JobEvent, row: RowMapping) -> str | None:
    """Why the event's attempt is over, or None while it is the job's live attempt."""
    if event.attempt < row["attempt"]:
        return f"attempt {event.attempt} is superseded by attempt {row['attempt']}"
    if event.attempt == row["attempt"] and JobState(row["state"]) in FINAL_STATES:
        return f"attempt {event.attempt} is over: the job is {row['state']}"
    return None


def answer(conn: Connection, events: list[JobEvent], rows: dict[str, RowMapping]) -> list[JobEvent]:
    """Tell the pilot of each attempt that is over to stop; the final events, with files,
    of those attempts' pilots (what they staged is to be removed)."""
    why = {e.event_id: reason for e in events if (reason := over(e, rows[e.job_id])) is not None}
    stale = [e for e in events if e.event_id in why]
    if not stale:
        return []
    holders = _holders(conn, stale)
    reasons: dict[tuple[str, int], str] = {}
    staged: list[JobEvent] = []
    for event in stale:
        holder = holders.get((event.job_id, event.attempt))
        if holder is None or holder["pilot_id"] != event.pilot_id:
            continue
        log.info(
            "job %s: %s of pilot %s: %s",
            event.job_id,
            event.kind,
            event.pilot_id,
            why[event.event_id],
        )
        if event.kind in ENDINGS:
            staged += [event] if event.files else []
        else:
            reasons.setdefault((event.job_id, event.attempt), why[event.event_id])
    outbox.put(conn, [c for k, r in reasons.items() for c in kill_commands([holders[k]], r)])
    return staged


def _holders(conn: Connection, events: list[JobEvent]) -> dict[tuple[str, int], RowMapping]:
    """The site and pilot of each event's attempt, as ``kill_commands`` takes them."""
    stmt = select(
        job_attempts.c.job_id.label("id"),
        job_attempts.c.attempt,
        job_attempts.c.site,
        job_attempts.c.pilot_id,
    ).where(
        keys_in(
            job_attempts.c.job_id, job_attempts.c.attempt, {(e.job_id, e.attempt) for e in events}
        )
    )
    return {(r["id"], r["attempt"]): r for r in conn.execute(stmt).mappings()}
