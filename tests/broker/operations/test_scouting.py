"""Following a task's scouts in SQL: the periodic review, and tuning again."""

from __future__ import annotations

import itertools
import uuid

from sqlalchemy import Engine, update

from broker.operations.scouting import Scouting, scouting_tasks
from broker.operations.scouts import held_jobs, plan
from broker.protocol import JobSpec, TaskSpec
from broker.settings import Settings
from broker.states import JobState
from broker.store import transitions
from broker.store.clock import now
from broker.store.engine import transaction
from broker.store.jobs import insert_defined, insert_new, load
from broker.store.schema import job_attempts, tasks
from broker.store.sites import add_site
from broker.store.tasks import get_task, insert_task
from broker.store.transitions import Change

S = JobState
SITE = "SCOUT_TEST_SITE"
TO_FINISHED = [S.DEFINED, S.ASSIGNED, S.ACTIVATED, S.SENT, S.RUNNING, S.HOLDING, S.FINISHED]


def new_task(engine: Engine, jobs: int, scouts: int) -> tuple[str, list[JobSpec]]:
    """A task of ``jobs`` jobs as TaskHandler stores it: scouts defined, the others held."""
    task_id = uuid.uuid4().hex[:16]
    spec = TaskSpec("true", "in", f"out.{task_id}", id=task_id, scouts=scouts, sites=[SITE])
    specs = [JobSpec("true", id=f"{task_id}-{n:06d}", task_id=task_id) for n in range(1, jobs + 1)]
    p = plan(spec, specs, Settings())
    with transaction(engine) as conn:
        add_site(conn, SITE)
        insert_task(conn, spec, now(), "user.alice", p)
        insert_defined(conn, p.brokered, now())
        insert_new(conn, held_jobs(p.held, {}), now())
    return task_id, specs


def move(engine: Engine, job_ids: list[str], path: list[JobState]) -> None:
    with transaction(engine) as conn:
        changes = [
            Change(i, 1, a, b, values={"site": SITE})
            for i in job_ids
            for a, b in itertools.pairwise(path)
        ]
        transitions.apply(conn, changes, now())


def task(engine: Engine, task_id: str) -> dict[str, object]:
    with transaction(engine) as conn:
        return get_task(conn, task_id)


def test_scouts_failed_by_the_watchdog_exhaust_their_task_at_the_periodic_review(
    engine: Engine,
) -> None:
    # Given a scouting task whose 2 scouts failed without a pilot's event (the watchdog)
    task_id, specs = new_task(engine, 4, 2)
    move(engine, [s.id for s in specs[:2]], [S.DEFINED, S.FAILED])
    assert task(engine, task_id)["status"] == "scouting"
    # When the periodic review runs
    with transaction(engine) as conn:
        assert task_id in scouting_tasks(conn)
        Scouting(Settings()).review(conn, scouting_tasks(conn), now())
    # Then the task is exhausted, its other jobs still held
    found = task(engine, task_id)
    assert (found["status"], found["reason"]) == ("exhausted", "all 2 scout job(s) failed")
    assert found["jobs_by_state"] == {"failed": 2, "pending": 2}


def test_a_tuned_task_is_tuned_again_when_its_finished_jobs_double(engine: Engine) -> None:
    # Given a running task tuned from 1 job, 2 of whose jobs finished peaking at 1000 MB,
    # and one throttled job placed at 2000 MB
    task_id, specs = new_task(engine, 3, 0)
    finished, throttled = [s.id for s in specs[:2]], specs[2].id
    move(engine, finished, TO_FINISHED)
    move(engine, [throttled], [S.DEFINED, S.ASSIGNED, S.THROTTLED])
    with transaction(engine) as conn:
        tuning = {"memory_mb": 900, "walltime_s": 60, "jobs": 1, "percentile": 95.0}
        conn.execute(update(tasks).where(tasks.c.id == task_id).values(tuning=tuning))
        conn.execute(
            update(job_attempts)
            .where(job_attempts.c.job_id.in_(finished))
            .values(peak_rss_mb=1000, wall_time_s=100.0, memory_mb=2000)
        )
    # When its jobs are reviewed
    with transaction(engine) as conn:
        Scouting(Settings()).review(conn, [task_id], now())
    # Then it is tuned from the 2 jobs, and the throttled job asks for the new tuning
    found = task(engine, task_id)["tuning"]
    assert (found["jobs"], found["memory_mb"], found["walltime_s"]) == (2, 1200, 150)
    with transaction(engine) as conn:
        row = load(conn, [throttled])[throttled]
    assert (row["spec"]["memory_mb"], row["spec"]["walltime_s"], row["state"]) == (
        1200,
        150,
        "throttled",
    )
