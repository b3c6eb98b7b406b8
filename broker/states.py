"""Job states (PanDA's names) and the transitions between them."""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    """Where a job attempt stands."""

    #: Held back from brokerage: a task's jobs waiting for its scouts, or an exhausted task's.
    PENDING = "pending"
    DEFINED = "defined"
    ASSIGNED = "assigned"
    THROTTLED = "throttled"
    ACTIVATED = "activated"
    SENT = "sent"
    STARTING = "starting"
    RUNNING = "running"
    HOLDING = "holding"
    TRANSFERRING = "transferring"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"
    CLOSED = "closed"


S = JobState

# What each group of states means, declared here once and used everywhere.

#: Queued: waiting for brokerage, for data or for a pilot; no pilot holds the job yet.
QUEUED = (S.DEFINED, S.ASSIGNED, S.THROTTLED, S.ACTIVATED)
#: Waiting at a site: placed at a site, waiting for its data or for a pilot there.
WAITING_AT_SITE = (S.ASSIGNED, S.THROTTLED, S.ACTIVATED)
#: Held by a pilot: claimed, its payload being set up or run.
HELD_BY_PILOT = (S.SENT, S.STARTING, S.RUNNING)
#: Cancellable at once: no pilot runs the job, so killing it is a state change (a job
#: held by a pilot is killed by telling its pilot).
CANCELLABLE_AT_ONCE = (S.PENDING, *QUEUED, S.HOLDING, S.TRANSFERRING)
#: Final: an attempt in one of these never moves again.
FINAL_STATES = frozenset({S.FINISHED, S.FAILED, S.CANCELLED, S.CLOSED})

#: Every legal move; anything else is refused and counted.
_ALLOWED: dict[JobState, frozenset[JobState]] = {
    S.PENDING: frozenset({S.DEFINED}),
    S.DEFINED: frozenset({S.ASSIGNED, S.PENDING}),
    S.ASSIGNED: frozenset({S.ACTIVATED, S.THROTTLED, S.DEFINED, S.PENDING}),
    S.THROTTLED: frozenset({S.ACTIVATED, S.PENDING}),
    S.ACTIVATED: frozenset({S.SENT, S.THROTTLED, S.PENDING}),
    S.SENT: frozenset({S.STARTING, S.RUNNING, S.HOLDING}),
    S.STARTING: frozenset({S.RUNNING, S.HOLDING}),
    S.RUNNING: frozenset({S.HOLDING}),
    S.HOLDING: frozenset({S.TRANSFERRING, S.FINISHED}),
    S.TRANSFERRING: frozenset({S.FINISHED}),
}

#: A job that is not final may always be failed, cancelled or closed.
_ENDINGS = frozenset({S.FAILED, S.CANCELLED, S.CLOSED})


def can_transition(current: JobState, target: JobState) -> bool:
    """True when ``current → target`` is a legal move."""
    if current in FINAL_STATES:
        return False
    return target in _ENDINGS or target in _ALLOWED.get(current, frozenset())


def is_final(state: JobState) -> bool:
    """True for states a job attempt never leaves."""
    return state in FINAL_STATES
