"""The state machine: PanDA's states, legal moves only."""

from __future__ import annotations

import itertools

import pytest

from broker.states import (
    CANCELLABLE_AT_ONCE,
    FINAL_STATES,
    HELD_BY_PILOT,
    QUEUED,
    WAITING_AT_SITE,
    JobState,
    can_transition,
)

S = JobState

HAPPY_PATH = [
    S.DEFINED,
    S.ASSIGNED,
    S.ACTIVATED,
    S.SENT,
    S.STARTING,
    S.RUNNING,
    S.HOLDING,
    S.FINISHED,
]


def test_the_happy_path_is_legal() -> None:
    for current, target in itertools.pairwise(HAPPY_PATH):
        assert can_transition(current, target), f"{current} -> {target}"


@pytest.mark.parametrize("final", sorted(FINAL_STATES))
def test_final_states_are_never_left(final: JobState) -> None:
    assert not any(can_transition(final, target) for target in JobState)


@pytest.mark.parametrize("state", [s for s in JobState if s not in FINAL_STATES])
def test_any_live_job_can_fail_be_cancelled_or_closed(state: JobState) -> None:
    assert all(can_transition(state, end) for end in (S.FAILED, S.CANCELLED, S.CLOSED))


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.DEFINED, S.RUNNING),
        (S.ACTIVATED, S.FINISHED),
        (S.RUNNING, S.STARTING),
        (S.SENT, S.ACTIVATED),
        (S.RUNNING, S.FINISHED),
        (S.DEFINED, S.DEFINED),
    ],
)
def test_skipping_or_going_back_is_illegal(current: JobState, target: JobState) -> None:
    assert not can_transition(current, target)


def test_the_groups_of_states_say_what_they_mean() -> None:
    # Queued work waits at a site once placed; no group holds a final state but FINAL
    assert set(WAITING_AT_SITE) == set(QUEUED) - {S.DEFINED}
    for group in (QUEUED, WAITING_AT_SITE, HELD_BY_PILOT, CANCELLABLE_AT_ONCE):
        assert not set(group) & FINAL_STATES
    # A live job is either cancelled at once or held by a pilot (told to stop), never both
    live = {s for s in JobState if s not in FINAL_STATES}
    assert set(CANCELLABLE_AT_ONCE) | set(HELD_BY_PILOT) == live
    assert not set(CANCELLABLE_AT_ONCE) & set(HELD_BY_PILOT)
