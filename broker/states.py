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
