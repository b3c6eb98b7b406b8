"""Scout jobs and task tuning through the whole system, on every backend."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker import topology
from broker.brokerage.catalogue import ResourceSlot
from broker.error_codes import PilotError
from broker.errors import NotFound
from broker.metrics import TASK_SCOUTING
from broker.protocol import JobCommand, TaskSpec, encode
from broker.settings import Settings
from broker.store.engine import transaction
from broker.store.jobs import list_jobs
from broker.store.tasks import get_task
from cli.benchmark.submissions import publish_task, publish_to
from tests.broker.monitor.test_web import get
from tests.harness import System, wait_for
from tests.test_brokerage import new_dataset, new_sites

#: A payload that holds about 130 MB (120 MB and the interpreter) long enough for the
#: pilot to measure it (``memory_check_s`` below), then writes its output.
HOG = (
    "python3 -c 'import time; x = bytearray(120 * 2**20); time.sleep(0.6)' "
    "&& cat {inputs} > {outputs}"
)
#: The issue's scouts of 3 GB: 3,072 MiB written page by page (so that they are resident),
#: held while the pilot measures them, then the output.
HOG_3GB = (
    "python3 -c 'import time; x = bytearray(3 * 2**30); x[::4096] = bytes(len(x) // 4096); "
    "time.sleep(0.6)' && cat {inputs} > {outputs}"
)
#: A slot that takes the 3 GB jobs once they ask for enough.
BIG = ResourceSlot("SCORE_HIMEM", 1, 8000)


@pytest.fixture
def measured(settings: Settings) -> Iterator[System]:
    """A system whose pilots measure their payloads' memory at each look (0.2 s), and
    whose tasks are exhausted after 2 jobs run out of memory at the largest slot."""
    s = System(settings.replace(memory_check_s=0.05, exhaust_memory_failures=2))
    yield s
    s.close()


def submit(system: System, **fields: Any) -> str:
    task = TaskSpec(id=uuid.uuid4().hex[:16], **fields)
    publish_task(system.settings, task)
    return task.id


def copying_task(system: System, jobs: int, scouts: int) -> str:
    """A task of ``jobs`` jobs that copy their input, asking for ``scouts``, at a new
    site whose SE holds the inputs, with the broker started; its id, once stored."""
    (site,) = new_sites(system, {})
    dataset = new_dataset(system, jobs, site=site)
    system.start_broker()
    task_id = submit(
        system,
        command="cat {inputs} > {outputs}",
        input_dataset=dataset,
        output_dataset=f"{dataset}.out",
        sites=[site],
        scouts=scouts,
    )
    wait_for(lambda: stored(system, task_id, jobs), what=f"the task's {jobs} jobs")
    return task_id


def task_of(system: System, task_id: str) -> dict[str, Any]:
    """The task as ``pandamq task ID`` shows it; empty until it is stored."""
    with transaction(system.engine) as conn:
        try:
            return get_task(conn, task_id)
        except NotFound:
            return {}


def jobs_of(system: System, task_id: str) -> dict[str, dict[str, Any]]:
    with transaction(system.engine) as conn:
        ids = [j["id"] for j in list_jobs(conn, task=task_id)]
    return {job_id: system.job(job_id) for job_id in ids}


def stored(system: System, task_id: str, jobs: int) -> bool:
    with transaction(system.engine) as conn:
        return len(list_jobs(conn, task=task_id)) == jobs


def test_scouts_that_need_more_memory_tune_the_other_jobs_so_none_runs_out(
    measured: System,
) -> None:
    system = measured
    # Given a task of 6 jobs that asks for 2,500 MB but whose payload uses 3 GB, with
    # 2 scouts, at a site whose slots have 8,000 MB
    (site,) = new_sites(system, {"slots": (BIG,)})
    dataset = new_dataset(system, 6, site=site)
    system.start_broker()
    task_id = submit(
        system,
        command=HOG_3GB,
        input_dataset=dataset,
        output_dataset=f"{dataset}.out",
        memory_mb=2500,
        sites=[site],
        scouts=2,
    )
    wait_for(lambda: stored(system, task_id, 6), what="the task's 6 jobs")
    # Then only the scouts are brokered, the others wait pending
    held = task_of(system, task_id)
    assert (held["status"], held["scouts"], held["jobs_by_state"].get("pending")) == (
        "scouting",
        2,
        4,
    )
    # When pilots run them
    system.start_pilot(site, memory_mb=BIG.memory_mb)
    system.start_pilot(site, memory_mb=BIG.memory_mb)
    wait_for(lambda: task_of(system, task_id).get("status") == "done", 60, what="the task done")
    # Then the scouts ran out of memory at 2,500 MB and finished with more (the retry rules)
    task, jobs = task_of(system, task_id), jobs_of(system, task_id)
    scouts = [jobs[f"{task_id}-{n:06d}"] for n in (1, 2)]
    assert all(s["attempts"][0]["error_code"] == PilotError.OUT_OF_MEMORY for s in scouts)
    # And the other jobs asked for the tuned memory, above the peak the scouts measured,
    # and none of them ran out of memory
    tuning = task["tuning"]
    assert 3072 <= tuning["peak_rss_mb"] < tuning["memory_mb"] <= 1.2 * tuning["peak_rss_mb"] + 1
    assert tuning["memory_mb"] > 2500 and tuning["walltime_s"] >= 60
    assert tuning["wall_time_s"] >= 0.6 and tuning["cpu_time_s"] > 0 and tuning["output_bytes"] > 0
    # (tuned from the 2 scouts, then again from 4 or more finished jobs)
    assert tuning["jobs"] >= 4
    others = [jobs[f"{task_id}-{n:06d}"] for n in range(3, 7)]
    (memory,) = {o["spec"]["memory_mb"] for o in others}  # tuned at release, all the same
    assert memory > 3072 and abs(memory - tuning["memory_mb"]) <= 0.1 * memory
    assert [len(o["attempts"]) for o in others] == [1] * 4
    assert all(o["state"] == "finished" for o in others)
    assert all(0 < o["attempts"][0]["peak_rss_mb"] < memory for o in others)
    # And the task page of the monitor shows the tuning
    _, _, page = get(system.engine, f"/tasks/{task_id}")
    assert "Scouts and tuning" in page and f"<td class=''>{tuning['memory_mb']}</td>" in page


def test_a_task_whose_scouts_all_fail_is_exhausted_and_resumed_by_retry(
    system: System, tmp_path: Path
) -> None:
    # Given a task of 5 jobs with 2 scouts whose payload fails until a file exists
    (site,) = new_sites(system, {})
    dataset = new_dataset(system, 5, site=site)
    ready = tmp_path / "ready"
    system.start_broker()
    system.start_pilot(site)
    task_id = submit(
        system,
        command=f"test -f {ready} && cat {{inputs}} > {{outputs}}",
        input_dataset=dataset,
        output_dataset=f"{dataset}.out",
        max_attempts=1,
        sites=[site],
        scouts=2,
    )
    # When both scouts fail
    exhausted = wait_for(
        lambda: (t := task_of(system, task_id)).get("status") == "exhausted" and t,
        what="the task exhausted",
    )
    # Then the task is exhausted with the reason, and its other jobs stay held, unrun
    assert exhausted["reason"].startswith("all 2 scout job(s) failed")
    assert exhausted["jobs_by_state"] == {"failed": 2, "pending": 3}
    # When the payload can run and the task is retried
    ready.touch()
    queue = topology.Topology(system.settings.queue_type).commands_queue()
    publish_to(system.settings, queue, [encode(JobCommand("retry", task_id=task_id))])
    # Then its scouts run again, the others are released, and every job finishes
    wait_for(lambda: task_of(system, task_id).get("status") == "done", 60, what="the task done")
    task = task_of(system, task_id)
    assert task["jobs_by_state"] == {"finished": 5}
    assert task["reason"].startswith("resumed by") and task["tuning"]["jobs"] >= 2


def test_a_task_too_small_to_scout_runs_without_scouts_and_says_so(system: System) -> None:
    # Given a task of 3 jobs that asks for 2 scouts (scouting needs 4 jobs)
    too_small = TASK_SCOUTING.labels(outcome="too_small")
    counted = too_small._value.get()
    task_id = copying_task(system, 3, scouts=2)
    # Then it runs without scouts, none held, and says why (and it is counted)
    task = task_of(system, task_id)
    assert too_small._value.get() == counted + 1
    assert (task["status"], task["scouts"], task["tuning"]) == ("running", 0, None)
    assert "pending" not in task["jobs_by_state"]
    assert task["reason"] == (
        "runs without scouts: its 3 job(s) are too few for 2 scout(s) "
        "(scouting needs at least 4 jobs)"
    )


def test_a_task_whose_jobs_run_out_of_memory_at_the_largest_slot_is_exhausted(
    measured: System,
) -> None:
    # Given a site whose largest slot has 150 MB, and a task of 6 jobs asking for it
    # whose payload uses about 130 MB more
    system = measured
    (site,) = new_sites(system, {"slots": (ResourceSlot("SCORE", 1, 150),)})
    dataset = new_dataset(system, 6, site=site)
    system.start_broker()
    system.start_pilot(site)
    task_id = submit(
        system,
        command=HOG.replace("120 *", "250 *"),
        input_dataset=dataset,
        output_dataset=f"{dataset}.out",
        memory_mb=150,
        max_attempts=1,
        sites=[site],
    )
    # When 2 of its jobs have run out of memory there
    task = wait_for(
        lambda: (t := task_of(system, task_id)).get("status") == "exhausted" and t,
        what="the task exhausted",
    )
    # Then it is exhausted with the reason, and the jobs no pilot held are held pending
    assert "ran out of memory at 150 MB, the largest memory any of its sites" in task["reason"]
    states = task["jobs_by_state"]
    assert states.get("failed", 0) >= 2 and states.get("pending", 0) >= 1, states
    assert "finished" not in states


def test_a_scouting_task_that_is_killed_ends(system: System) -> None:
    # Given a task scouting, with no pilot: 2 scouts queued and 2 jobs held
    task_id = copying_task(system, 4, scouts=2)
    # When it is killed
    queue = topology.Topology(system.settings.queue_type).commands_queue()
    publish_to(system.settings, queue, [encode(JobCommand("kill", task_id=task_id))])
    # Then its held jobs are cancelled with the others, and it ends
    task = wait_for(
        lambda: (t := task_of(system, task_id)).get("status") == "failed" and t,
        what="the task ended",
    )
    assert task["jobs_by_state"] == {"cancelled": 4} and task["ended_at"]
