"""Which of a new task's jobs scout: its first ones, at a higher priority, the
others held ``pending`` for them, unless the task is too small to scout
(docs/reliability.md, "Scout jobs and task tuning"; what follows the scouts is
``broker.operations.scouting``)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from broker.metrics import TASK_SCOUTING
from broker.protocol import JobSpec, TaskSpec
from broker.settings import Settings
from broker.states import JobState
from broker.store.jobs import NewJob

log = logging.getLogger(__name__)

SCOUTING = "scouting"
#: Why a task's other jobs wait.
HELD = "held until the task's scouts end"


@dataclass(frozen=True)
class Plan:
    """How a new task's jobs start: those brokered now, those held for the scouts."""

    brokered: list[JobSpec]
    held: list[JobSpec]
    note: str = ""

    @property
    def scouts(self) -> int:
        """How many scouts the task runs."""
        return len(self.brokered) if self.held else 0

    @property
    def status(self) -> str:
        """The task's status as it is stored."""
        return SCOUTING if self.held else "running"


def plan(task: TaskSpec, specs: Sequence[JobSpec], settings: Settings) -> Plan:
    """The scouts (the first jobs, at a higher priority) and the jobs held for them.

    Scouting a task is worth it when as many jobs at least are left to tune as
    scouts run: a task of fewer than twice its scouts runs without them, and
    ``note`` says so.
    """
    wanted = settings.scout_jobs if task.scouts is None else task.scouts
    if wanted == 0:
        return Plan(list(specs), [])
    if len(specs) < 2 * wanted:
        note = (
            f"runs without scouts: its {len(specs)} job(s) are too few for {wanted} "
            f"scout(s) (scouting needs at least {2 * wanted} jobs)"
        )
        return Plan(list(specs), [], note)
    boost = settings.scout_priority_boost
    scouts = [dataclasses.replace(s, priority=s.priority + boost) for s in specs[:wanted]]
    return Plan(scouts, list(specs[wanted:]))


def started(task_id: str, plan: Plan) -> None:
    """Count and log how a new task starts: scouting, or too small to scout."""
    if plan.held:
        TASK_SCOUTING.labels(outcome="scouting").inc()
    elif plan.note:
        TASK_SCOUTING.labels(outcome="too_small").inc()
        log.warning("task %s %s", task_id, plan.note)


def held_jobs(specs: Iterable[JobSpec], owners: Mapping[str, str | None]) -> list[NewJob]:
    """New jobs that wait ``pending`` for their task's scouts."""
    jobs_ = [NewJob(s, owners.get(s.id)) for s in specs]
    for job in jobs_:
        job.move(JobState.PENDING, HELD)
    return jobs_
