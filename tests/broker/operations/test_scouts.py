"""Which of a new task's jobs scout, and when a task is too small to scout."""

from __future__ import annotations

import pytest

from broker.operations.scouts import plan
from broker.protocol import JobSpec, TaskSpec
from broker.settings import Settings

TASK = TaskSpec(command="true", input_dataset="in", output_dataset="out", id="t", priority=5)


def specs(n: int) -> list[JobSpec]:
    return [JobSpec("true", id=f"t-{i:06d}", priority=5) for i in range(1, n + 1)]


def test_the_first_jobs_scout_at_a_higher_priority_and_the_others_are_held() -> None:
    p = plan(TaskSpec(**{**TASK.__dict__, "scouts": 2}), specs(6), Settings(scout_priority_boost=7))
    assert [s.id for s in p.brokered] == ["t-000001", "t-000002"]
    assert [s.priority for s in p.brokered] == [12, 12]
    assert [s.id for s in p.held] == [f"t-{i:06d}" for i in range(3, 7)]
    assert (p.scouts, p.status, p.note) == (2, "scouting", "")


@pytest.mark.parametrize("jobs", [1, 3])
def test_a_task_too_small_to_scout_runs_without_scouts_and_says_so(jobs: int) -> None:
    p = plan(TaskSpec(**{**TASK.__dict__, "scouts": 2}), specs(jobs), Settings())
    assert (len(p.brokered), p.held, p.scouts, p.status) == (jobs, [], 0, "running")
    assert [s.priority for s in p.brokered] == [5] * jobs
    assert p.note == (
        f"runs without scouts: its {jobs} job(s) are too few for 2 scout(s) "
        "(scouting needs at least 4 jobs)"
    )


def test_the_default_count_comes_from_the_settings_and_zero_means_none() -> None:
    assert plan(TASK, specs(4), Settings(scout_jobs=2)).scouts == 2
    assert plan(TASK, specs(4), Settings()).scouts == 0
    none = plan(TaskSpec(**{**TASK.__dict__, "scouts": 0}), specs(4), Settings(scout_jobs=2))
    assert (none.scouts, none.note, len(none.brokered)) == (0, "", 4)
