"""Ingest pilots' job events: transitions and heartbeats, idempotent on redelivery.

An event is applied once: the first history row it causes carries its id, and
a redelivered event whose id is already in the history is skipped. Only the
pilot that claimed an attempt may report on it, and a pilot with an identity
of its own only as itself; anything else is refused and counted.

A final event that reports files leaves its job ``holding``, with the report
kept (``broker.store.reports``): the DDM bridge registers the files and moves
the job on (PanDA's Adder). One that reports none ends the job here.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, RowMapping, select, update

from broker.messaging.consumer import Incoming
from broker.observability.pipeline import heartbeats_recorded
from broker.operations import reported, retries
from broker.operations.kills import kill_commands
from broker.operations.scouting import Scouting
from broker.operations.throttle import Limits
from broker.protocol import JobEvent
from broker.security import senders
from broker.service import superseded
from broker.settings import Settings
from broker.states import FINAL_STATES, JobState
from broker.store import outbox, reports, transitions
from broker.store.clock import now
from broker.store.engine import transaction
from broker.store.jobs import load
from broker.store.keys import attempts_in
from broker.store.schema import job_transitions, jobs
from broker.store.transitions import Change

log = logging.getLogger(__name__)

S = JobState

#: The states each event kind moves a job through. The pilot's finished and
#: failed pass through ``holding``; a final event with files stops there
#: (``HELD``) for the DDM bridge to register them.
PATH: dict[str, tuple[JobState, ...]] = {
    "starting": (S.STARTING,),
    "running": (S.RUNNING,),
    "finished": (S.HOLDING, S.FINISHED),
    "failed": (S.HOLDING, S.FAILED),
    "cancelled": (S.CANCELLED,),
}
HELD: tuple[JobState, ...] = (S.HOLDING,)

#: States past which a report says nothing new: a progress report once the job is
#: there or further, and a second ending (a pilot's repeated final report, under a new
#: event id) once the first has left the job with the DDM bridge: the first one wins.
#: (An ending of an attempt already final is ``broker.service.superseded``'s.)
STALE_AFTER: dict[str, frozenset[JobState]] = {
    "starting": frozenset({S.STARTING, S.RUNNING, S.HOLDING, S.TRANSFERRING, *FINAL_STATES}),
    "running": frozenset({S.RUNNING, S.HOLDING, S.TRANSFERRING, *FINAL_STATES}),
    **dict.fromkeys(reported.FINAL, frozenset({S.HOLDING, S.TRANSFERRING})),
}


class EventHandler:
    """Handles batches from ``pandamq.events`` in one transaction."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self._engine = engine
        self._policy = retries.Policy.of(settings)
        self._limits = Limits.of(settings)
        self._scouting = Scouting(settings)

    def __call__(self, batch: list[Incoming[JobEvent]]) -> None:
        """Apply each new event's transitions and heartbeats; retry what failed."""
        t = now()
        with transaction(self._engine) as conn:
            events = _new_events(conn, batch)
            rows = load(conn, (i.message.job_id for i in events), lock=True)
            older: list[JobEvent] = []
            accepted = [
                i.message for i in events if _authorised(i, rows.get(i.message.job_id), older)
            ]
            over = superseded.answer(conn, older + accepted, rows)
            accepted = [e for e in accepted if superseded.over(e, rows[e.job_id]) is None]
            applied = transitions.apply(conn, _changes(accepted, rows, t), t)
            held = _held(accepted, applied)
            reports.record(conn, over + held, t)
            _heartbeats(conn, accepted, rows, t)
            failed = _failures(accepted, rows, applied)
            decided = retries.decide_all(conn, failed, self._policy)
            retries.retry(conn, decided, t, self._limits, self._policy)
            # (a held job's attempt is reviewed by the bridge, once it has moved it on)
            kept = {e.event_id for e in held}
            self._scouting.after_events(
                conn, [e for e in accepted if e.event_id not in kept], rows, t
            )


def _held(events: list[JobEvent], applied: list[Change]) -> list[JobEvent]:
    """The final events with files whose jobs this batch left ``holding``."""
    held = {c.job_id for c in applied if c.to_state == S.HOLDING}
    return [e for e in events if e.kind in reported.FINAL and e.files and e.job_id in held]


def _failures(
    events: list[JobEvent], rows: dict[str, RowMapping], applied: list[Change]
) -> list[tuple[RowMapping, retries.Failure]]:
    """Each attempt that failed by the pilot's report, and why."""
    failed = {c.job_id for c in applied if c.to_state == S.FAILED}
    return [
        (rows[e.job_id], reported.failure(e))
        for e in events
        if e.kind in ("finished", "failed") and e.job_id in failed
    ]


def _new_events(conn: Connection, batch: list[Incoming[JobEvent]]) -> list[Incoming[JobEvent]]:
    """Drop events already applied (a redelivery) and repeats within the batch.

    Heartbeats leave no history row to look for; one that comes again is harmless.
    """
    ids = {i.message.event_id for i in batch if i.message.kind != "heartbeat"}
    seen = {
        r.event_id
        for r in conn.execute(
            select(job_transitions.c.event_id).where(job_transitions.c.event_id.in_(ids))
        )
    }
    fresh: dict[str, Incoming[JobEvent]] = {}
    for incoming in batch:
        if incoming.message.event_id not in seen:
            fresh.setdefault(incoming.message.event_id, incoming)
    return list(fresh.values())


def _authorised(
    incoming: Incoming[JobEvent], row: RowMapping | None, older: list[JobEvent]
) -> bool:
    """Only the pilot holding the current attempt may report on it; events of older
    attempts are collected in ``older``."""
    event = incoming.message
    if row is None:
        incoming.refuse(f"event for unknown job {event.job_id!r}")
        return False
    user_id = incoming.user_id
    why = senders.site_refusal(user_id, "report on", row["site"]) or senders.pilot_refusal(
        user_id, "report", event.pilot_id
    )
    if not senders.check(incoming, "event", why):
        return False
    if event.attempt != row["attempt"]:
        log.info(
            "ignored %s event of job %s for old attempt %d", event.kind, event.job_id, event.attempt
        )
        older.append(event)
        return False
    return senders.check(incoming, "event", senders.holder_refusal(event.pilot_id, row))


def _changes(events: list[JobEvent], rows: dict[str, RowMapping], t: datetime) -> list[Change]:
    """The transitions of each event, from the job's state as the batch leaves it."""
    state = {job_id: JobState(row["state"]) for job_id, row in rows.items()}
    changes: list[Change] = []
    for event in events:
        if _stale(event, state[event.job_id]):
            continue
        for i, target in enumerate(_path(event)):
            changes.append(
                Change(
                    event.job_id,
                    event.attempt,
                    state[event.job_id],
                    target,
                    event_id=event.event_id if i == 0 else None,
                    reason=f"{event.kind} reported by pilot {event.pilot_id}",
                    values=_values(event, target, t),
                )
            )
            state[event.job_id] = target
    return changes


def _stale(event: JobEvent, current: JobState) -> bool:
    """A progress report overtaken by a later one (events may be handled out of order)."""
    if event.kind in STALE_AFTER and current in STALE_AFTER[event.kind]:
        level = logging.INFO if event.kind in reported.FINAL else logging.DEBUG
        log.log(
            level,
            "skipped stale %s event of job %s, which is %s",
            event.kind,
            event.job_id,
            current,
        )
        return True
    return False


def _path(event: JobEvent) -> tuple[JobState, ...]:
    if event.kind in reported.FINAL and event.files:
        return HELD
    return PATH.get(event.kind, ())


def _values(event: JobEvent, target: JobState, t: datetime) -> dict[str, Any]:
    if target in FINAL_STATES:
        return reported.final_values(event)
    if target == S.STARTING:
        return {"heartbeat_at": t, "started_at": t}
    return {"heartbeat_at": t}


def _heartbeats(
    conn: Connection, events: list[JobEvent], rows: dict[str, RowMapping], t: datetime
) -> None:
    """Record heartbeats; a pilot that missed a kill command is told again."""
    beats = {e.job_id: e for e in events if e.kind == "heartbeat"}
    if not beats:
        return
    outbox.put(conn, kill_commands(r for r in map(rows.get, beats) if r and r["kill_requested_at"]))
    # One statement for the whole batch (an executemany here ran row by row).
    conn.execute(
        update(jobs)
        .where(
            attempts_in(
                conn,
                ((e.job_id, e.attempt) for e in beats.values()),
                [S.STARTING.value, S.RUNNING.value],
            )
        )
        .values(heartbeat_at=t)
    )
    heartbeats_recorded(rows[job_id]["site"] for job_id in beats if job_id in rows)
