"""Tasks, brokerage, throttling and re-brokerage, on every backend."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from broker import topology
from broker.brokerage.catalogue import ResourceSlot, SiteConfig
from broker.error_codes import BrokerageError, ErrorFamily, TaskBufferError
from broker.protocol import JobSpec, TaskSpec
from broker.settings import Settings
from broker.store.clock import now
from broker.store.datasets import FileRecord, dataset_files, register
from broker.store.engine import transaction
from broker.store.jobs import list_jobs
from broker.store.schema import job_transitions, outbox
from broker.store.sites import apply_catalogue, set_status
from broker.store.tasks import get_task
from cli.benchmark.submissions import publish_task
from ddm_bridge.se import Checksum, checksum, se_path
from tests.ddm_bridge.files import dataset_states
from tests.harness import System, dead_letters, queue_depth, wait_for

SCORE = ResourceSlot("SCORE", 1, 2000)
MCORE = ResourceSlot("MCORE", 8, 16000)


@pytest.fixture
def capped(settings: Settings) -> Iterator[System]:
    """A system whose periodic brokerage work runs often and whose site queues are short."""
    s = System(
        settings.replace(
            brokerage_interval_s=0.2, throttle_min_activated=3, throttle_running_factor=1.0
        )
    )
    yield s
    s.close()


def new_sites(system: System, *configs: dict[str, Any]) -> list[str]:
    """Sites with names no other test uses, configured as given."""
    sites = [SiteConfig(f"SITE_{uuid.uuid4().hex[:8].upper()}", **c) for c in configs]
    with transaction(system.engine) as conn:
        apply_catalogue(conn, sites)
    return [s.name for s in sites]


def new_dataset(system: System, files: int, site: str | None = None) -> str:
    """An input dataset of ``files`` files; with ``site``, real files on its SE (replicas)."""
    name = f"data.{uuid.uuid4().hex[:8]}"
    records = [_file(system, f"{name}.{n:04d}", site) for n in range(files)]
    with transaction(system.engine) as conn:
        register(conn, name, records, site, now())
    return name


def _file(system: System, name: str, site: str | None) -> tuple[FileRecord, str]:
    if site is None:
        return FileRecord("test", name, str(uuid.uuid4()), 1, "00000001"), ""
    path = se_path(system.settings.ddm_root, site, "test", name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(name)
    found = checksum(path)
    return FileRecord("test", name, str(uuid.uuid4()), found.size, found.adler32), str(path)


def submit_task(system: System, **fields: Any) -> str:
    task = TaskSpec(id=uuid.uuid4().hex[:16], **fields)
    publish_task(system.settings, task)
    return task.id


def task_jobs(system: System, task_id: str, count: int) -> list[dict[str, Any]]:
    def split() -> list[dict[str, Any]]:
        with transaction(system.engine) as conn:
            jobs = list_jobs(conn, task=task_id)
        return jobs if len(jobs) == count and all(j["site"] for j in jobs) else []

    return wait_for(split, what=f"{count} jobs of task {task_id}")


def claims(system: System, ids: list[str]) -> list[str]:
    """Job ids in the order pilots claimed them."""
    with transaction(system.engine) as conn:
        rows = conn.execute(
            select(job_transitions.c.job_id)
            .where(job_transitions.c.job_id.in_(ids), job_transitions.c.to_state == "sent")
            .order_by(job_transitions.c.id)
        )
        return [r.job_id for r in rows]


def test_a_1000_file_task_becomes_100_jobs_whose_outputs_and_progress_add_up(
    system: System,
) -> None:
    # Given a site with two pilots and a dataset of 1000 files
    (site,) = new_sites(system, {})
    dataset = new_dataset(system, 1000, site=site)
    system.start_broker()
    # When a task over it with 10 files per job runs
    task_id = submit_task(
        system,
        command="echo {inputs} > {outputs}",
        input_dataset=dataset,
        output_dataset=f"{dataset}.out",
        files_per_job=10,
        sites=[site],
    )
    jobs = task_jobs(system, task_id, 100)
    system.start_pilot(site)
    system.start_pilot(site)
    system.wait_final([j["id"] for j in jobs], timeout_s=110)
    # Then every file was read by exactly one job and every job wrote one output
    specs = [system.job(j["id"])["spec"] for j in jobs]
    inputs = [f for s in specs for f in s["input_files"]]
    assert len(inputs) == len(set(inputs)) == 1000
    assert all(len(s["input_files"]) == 10 for s in specs)
    assert len({o for s in specs for o in s["output_files"]}) == 100
    # And the task's progress says so
    with transaction(system.engine) as conn:
        task = get_task(conn, task_id)
    assert (task["status"], task["jobs"], task["files_done"], task["files_failed"]) == (
        "done",
        100,
        1000,
        0,
    )
    assert task["jobs_by_state"] == {"finished": 100}
    # And the 100 outputs are in the task's output dataset, each with its size and adler32
    # as stored on the site's SE, and the 100 logs in its log dataset
    with transaction(system.engine) as conn:
        outputs = dataset_files(conn, f"{dataset}.out")
        logs = dataset_files(conn, f"{dataset}.out.log")
    assert sorted(o.name for o in outputs) == sorted(o for s in specs for o in s["output_files"])
    for output in outputs:
        stored = se_path(system.settings.ddm_root, site, output.scope, output.name)
        assert checksum(stored) == Checksum(output.size, output.adler32)
    assert len(logs) == 100
    assert (task["output_dataset"], task["output_files"], task["log_dataset"]) == (
        f"{dataset}.out",
        100,
        f"{dataset}.out.log",
    )
    # And both datasets are closed, every job of the task being final
    system.start_bridge()
    wait_for(
        lambda: dataset_states(system.engine, f"{dataset}.out", f"{dataset}.out.log") == {"closed"},
        what="the task's datasets closed",
    )


def test_a_task_whose_output_dataset_exists_is_refused(system: System) -> None:
    # Given an input dataset, and another dataset a task will name as its output
    (site,) = new_sites(system, {})
    dataset, taken = new_dataset(system, 2), new_dataset(system, 1)
    system.start_broker()
    dead_letters(system.settings)
    # When the task reaches the broker (published as any client could, unchecked)
    task_id = submit_task(
        system, command="true", input_dataset=dataset, output_dataset=taken, sites=[site]
    )
    # Then it is dead-lettered with the reason, no job is made, and the dataset is untouched
    letters: list[tuple[bytes, dict[str, object]]] = []
    wait_for(lambda: letters.extend(dead_letters(system.settings)) or letters, what="the letter")
    ((_, headers),) = letters
    assert f"dataset {taken!r} exists already" in str(headers[topology.REASON_HEADER])
    with transaction(system.engine) as conn:
        assert list_jobs(conn, task=task_id) == []
        assert len(dataset_files(conn, taken)) == 1


def test_brokerage_filters_status_release_and_memory(system: System) -> None:
    # Given an offline, a brokeroff, an online site with release 24.0 and one without
    offline, brokeroff, good, plain = new_sites(
        system,
        {"status": "offline"},
        {"status": "brokeroff"},
        {"slots": (SCORE, MCORE), "releases": ("24.0",)},
        {"slots": (SCORE, MCORE)},
    )
    system.start_broker()
    # When jobs are submitted that may go to any of them
    anywhere = [offline, brokeroff, good, plain]
    five = system.submit(*[JobSpec(command="true", sites=[offline, brokeroff, good])] * 5)
    (release,) = system.submit(JobSpec(command="true", sites=anywhere, release="24.0"))
    (big,) = system.submit(JobSpec(command="true", sites=anywhere, memory_mb=64000, cores=8))
    wait_for(
        lambda: set(system.states([*five, release, big]).values()) == {"activated", "failed"},
        what="brokerage of every job",
    )
    # Then offline and brokeroff sites got nothing, release 24.0 went where it is
    assert {system.job(j)["site"] for j in five} == {good}
    job = system.job(release)
    assert job["site"] == good
    assert job["brokerage"]["skipped"][plain] == "release 24.0 not installed (provides: none)"
    assert job["brokerage"]["skipped"][offline] == "status offline"
    # And the 64 GB job failed brokerage with a reason naming memory
    failed = system.job(big)
    assert (failed["state"], failed["error_family"], failed["error_code"]) == (
        "failed",
        ErrorFamily.BROKERAGE.value,
        BrokerageError.NO_SITE,
    )
    assert "memory: needs 64000 MB" in failed["diagnostic"]


def test_data_locality_then_spill_over(system: System) -> None:
    # Given site A holding a dataset's files (at most 5 queued jobs) and an empty site B
    a, b = new_sites(system, {"max_queued": 5}, {})
    dataset = new_dataset(system, 8, site=a)
    system.start_broker()
    # When a task of 2 jobs over it is brokered, with equal load at A and B
    first = submit_task(
        system,
        command="true",
        input_dataset=dataset,
        output_dataset="o1",
        files_per_job=4,
        sites=[a, b],
    )
    # Then both go to A, where the data is
    assert {j["site"] for j in task_jobs(system, first, 2)} == {a}
    # When a task of 8 jobs follows, Then A takes 3 more up to its cap and B the rest
    second = submit_task(
        system, command="true", input_dataset=dataset, output_dataset="o2", sites=[a, b]
    )
    jobs = task_jobs(system, second, 8)
    assert sorted(j["site"] for j in jobs).count(a) == 3
    spilled = next(j for j in jobs if j["site"] == b)
    why = system.job(spilled["id"])["brokerage"]["skipped"][a]
    assert why == "queue full: 5 jobs queued, the site's cap is 5"


def test_activation_keeps_to_the_cap_and_higher_priority_is_claimed_first(capped: System) -> None:
    (site,) = new_sites(capped, {})
    higher_priority_is_claimed_first(capped, site)


def higher_priority_is_claimed_first(capped: System, site: str) -> None:
    """12 jobs of shuffled priorities at a site whose queue holds 3 (``capped``), taken by
    one pilot: after the 3 queued first, highest priority first."""
    # Given 12 jobs of shuffled priorities at a site whose queue holds 3
    capped.start_broker()
    priorities = list(range(12))
    random.shuffle(priorities)
    ids = capped.submit(*[JobSpec(command="true", site=site, priority=p) for p in priorities])
    wait_for(
        lambda: sorted(capped.states(ids).values()) == ["activated"] * 3 + ["throttled"] * 9,
        what="3 activated and 9 throttled",
    )
    # When one pilot takes them all
    capped.start_pilot(site)
    capped.wait_final(ids)
    # Then after the 3 queued first, jobs were claimed highest priority first
    priority = dict(zip(ids, priorities, strict=True))
    order = [priority[j] for j in claims(capped, ids)]
    assert len(order) == 12
    assert order[3:] == sorted(order[3:], reverse=True), order
    # And the queue never held more than 3 activated jobs
    assert max_activated(capped, ids) == 3


@pytest.fixture
def shared(settings: Settings) -> Iterator[System]:
    """A system whose site queues hold 10 jobs, shared 30:70 by production and analysis."""
    s = System(
        settings.replace(
            throttle_min_activated=10,
            throttle_running_factor=1.0,
            activity_shares="production=30,analysis=70",
        )
    )
    yield s
    s.close()


def test_a_busy_site_releases_throttled_jobs_by_the_configured_shares(shared: System) -> None:
    # Given 50 production and 50 analysis jobs of equal priority at a site whose queue holds 10
    (site,) = new_sites(shared, {})
    shared.start_broker()
    specs = [
        JobSpec(command="true", site=site, activity=activity)
        for _ in range(50)
        for activity in ("production", "analysis")
    ]
    ids = shared.submit(*specs)
    activity = {job_id: spec.activity for job_id, spec in zip(ids, specs, strict=True)}
    wait_for(
        lambda: sorted(shared.states(ids).values()) == ["activated"] * 10 + ["throttled"] * 90,
        what="10 activated and 90 throttled",
    )
    # When two pilots drain the queue
    shared.start_pilot(site)
    shared.start_pilot(site)
    assert set(shared.wait_final(ids, timeout_s=90).values()) == {"finished"}
    # Then the first 40 releases (both activities still waiting) follow the shares, 30:70,
    # not the order of submission (50:50) nor the default shares (80:20)
    released = [activity[j] for j in releases(shared, ids)]
    assert len(released) == 90
    analysis = released[:40].count("analysis") / 40
    assert 0.6 <= analysis <= 0.8, released
    # And the queue never held more than 10 activated jobs
    assert max_activated(shared, ids) == 10


def releases(system: System, ids: list[str]) -> list[str]:
    """Job ids in the order they were released from ``throttled``."""
    with transaction(system.engine) as conn:
        rows = conn.execute(
            select(job_transitions.c.job_id)
            .where(
                job_transitions.c.job_id.in_(ids),
                job_transitions.c.from_state == "throttled",
                job_transitions.c.to_state == "activated",
            )
            .order_by(job_transitions.c.id)
        )
        return [r.job_id for r in rows]


def dispatches_waiting(system: System, ids: list[str]) -> bool:
    """True while the outbox still holds a dispatch of one of ``ids`` (not yet in its queue)."""
    with transaction(system.engine) as conn:
        bodies = [r.body for r in conn.execute(select(outbox.c.body))]
    return any(job_id in body for job_id in ids for body in bodies)


def max_activated(system: System, ids: list[str]) -> int:
    with transaction(system.engine) as conn:
        rows = conn.execute(
            select(job_transitions.c.from_state, job_transitions.c.to_state)
            .where(job_transitions.c.job_id.in_(ids))
            .order_by(job_transitions.c.id)
        ).all()
    held = most = 0
    for frm, to in rows:
        held += (to == "activated") - (frm == "activated")
        most = max(most, held)
    return most


def test_an_offline_site_has_its_queued_jobs_re_brokered_none_lost_or_duplicated(
    capped: System,
) -> None:
    # Given 6 jobs queued at site A (B takes no new work yet)
    a, b = new_sites(capped, {}, {"status": "brokeroff"})
    capped.start_broker()
    ids = capped.submit(*[JobSpec(command="true", sites=[a, b]) for _ in range(6)])
    wait_for(
        lambda: (
            len(set(capped.states(ids).values()) - {"activated", "throttled"}) == 0
            and len(capped.states(ids)) == 6
        ),
        what="jobs queued at A",
    )
    assert {capped.job(j)["site"] for j in ids} == {a}
    # When A goes offline and B online
    with transaction(capped.engine) as conn:
        set_status(conn, b, "online")
        set_status(conn, a, "offline")
    wait_for(lambda: all(capped.job(j)["site"] == b for j in ids), what="re-brokerage to B")
    # And pilots at both sites take whatever their queues hold
    capped.start_pilot(a)
    capped.start_pilot(b)
    # Then every job finished once, at B, in its second attempt
    assert set(capped.wait_final(ids).values()) == {"finished"}
    for job_id in ids:
        job = capped.job(job_id)
        assert [t["to_state"] for t in job["transitions"]].count("sent") == 1
        first, second = job["attempts"]
        assert (first["state"], first["error_code"]) == ("closed", TaskBufferError.REASSIGNED)
        assert (second["state"], second["site"]) == ("finished", b)


def test_a_score_pilot_never_receives_an_mcore_job(system: System) -> None:
    # Given a site with SCORE and MCORE slots, and jobs of both kinds
    (site,) = new_sites(system, {"slots": (SCORE, MCORE)})
    system.start_broker()
    score = system.submit(*[JobSpec(command="true", site=site) for _ in range(3)])
    mcore = system.submit(*[JobSpec(command="true", site=site, cores=4) for _ in range(3)])
    # When a SCORE pilot and an MCORE pilot too small for them run
    small = system.start_pilot(site, cores=1, memory_mb=2000)
    too_small = system.start_pilot(site, cores=2, memory_mb=4000)
    assert set(system.wait_final(score).values()) == {"finished"}
    # Then the MCORE jobs are still waiting
    assert set(system.states(mcore).values()) == {"activated"}
    # And once a pilot big enough comes, they run there
    big = system.start_pilot(site, cores=8, memory_mb=16000)
    assert set(system.wait_final(mcore).values()) == {"finished"}
    assert {system.job(j)["pilot_id"] for j in mcore} == {big.pilot_id}
    assert small.pilot_id != too_small.pilot_id


def test_a_pilot_takes_the_largest_jobs_it_fits_first(system: System) -> None:
    # Given SCORE jobs queued before MCORE jobs at a site
    (site,) = new_sites(system, {"slots": (SCORE, MCORE)})
    system.start_broker()
    score = system.submit(*[JobSpec(command="true", site=site) for _ in range(2)])
    mcore = system.submit(*[JobSpec(command="true", site=site, cores=8) for _ in range(2)])
    wait_for(lambda: set(system.states(score + mcore).values()) == {"activated"}, what="jobs")
    wait_for(lambda: not dispatches_waiting(system, mcore), what="dispatches in the queues")
    mcore_queue = topology.job_queue_name(site, "MCORE")
    wait_for(
        lambda: queue_depth(system.settings, mcore_queue) == 2,
        what="MCORE dispatches in their queue",
    )
    # When an 8-core pilot takes them
    system.start_pilot(site, cores=8, memory_mb=16000)
    system.wait_final(score + mcore)
    # Then it claimed the MCORE jobs first
    assert set(claims(system, score + mcore)[:2]) == set(mcore)
