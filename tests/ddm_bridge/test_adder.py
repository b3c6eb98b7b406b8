"""PanDA's Adder: the event handler leaves a job that reported files ``holding``; the
bridge registers them through its backend and moves the job on, once, whichever of
several bridges does it and even when one dies half way."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from broker.error_codes import DDMError, ErrorFamily, PilotError
from broker.messaging.consumer import Incoming
from broker.operations.kills import kill
from broker.protocol import FileInfo, JobEvent
from broker.scopes import owner_scope
from broker.service.events import EventHandler
from broker.settings import Settings
from broker.states import JobState
from broker.store import datasets, reports
from broker.store.clock import now
from broker.store.datasets import FileRecord
from broker.store.engine import transaction
from broker.store.jobs import get_job, load, states_of
from broker.store.schema import outbox, reported_outputs
from ddm_bridge import holding
from ddm_bridge.adder import Adder
from ddm_bridge.backends.local import LocalDDM
from ddm_bridge.se import checksum, se_path, staging_dir
from tests.broker.service.jobs import OWNER, PILOT, SITE, jobs_in

S = JobState
#: The scope of the outputs of the jobs of ``jobs_in``.
SCOPE = owner_scope(OWNER)


def staged_log(root: Path, job_id: str, attempt: int = 1) -> FileInfo:
    """A log that an attempt of ``job_id`` staged on SITE's SE, in the owner's scope."""
    path = staging_dir(str(root), SITE, job_id, attempt) / f"{job_id}.{attempt}.log.tgz"
    path.parent.mkdir(parents=True)
    path.write_text(job_id)
    found = checksum(path)
    return FileInfo(SCOPE, path.name, uuid.uuid4().hex, found.size, found.adler32, "log")


def report(engine: Engine, settings: Settings, kind: str, files: dict[str, FileInfo]) -> None:
    """The pilot reports each job ``kind`` with its file, in one batch."""
    EventHandler(engine, settings)(
        [
            Incoming(
                JobEvent(uuid.uuid4().hex, i, 1, PILOT, kind, 0.0, 0, files=[f]),
                None,
                user_id="guest",
            )
            for i, f in files.items()
        ]
    )


def reports_left(engine: Engine, ids: list[str]) -> int:
    """How many reports of these jobs wait for a bridge."""
    stmt = select(func.count()).where(reported_outputs.c.job_id.in_(ids))
    with transaction(engine) as conn:
        return int(conn.execute(stmt).scalar_one())


def endings_of(engine: Engine, job_id: str) -> int:
    """How many job endings of ``job_id`` are in the outbox."""
    with transaction(engine) as conn:
        bodies = conn.execute(select(outbox.c.body).where(outbox.c.exchange == "pandamq.endings"))
        return sum(f'"job_id":"{job_id}"' in b for b in bodies.scalars())


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(ddm_root=str(tmp_path), lease_s=60.0)


def adder(settings: Settings, engine: Engine, holder: str, backend: LocalDDM) -> Adder:
    return Adder(settings, engine, backend, holder)


def test_a_job_that_reports_files_holds_until_the_bridge_registers_them(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    # Given a running job that staged its log
    (job,) = jobs_in(engine, S.RUNNING)
    log = staged_log(tmp_path, job)
    # When its pilot reports it finished
    report(engine, settings, "finished", {job: log})
    # Then it holds, its log still staged, and no ending is told yet
    with transaction(engine) as conn:
        assert states_of(conn, [job]) == {job: "holding"}
    assert reports_left(engine, [job]) == 1 and endings_of(engine, job) == 0
    # When a bridge passes
    backend = LocalDDM(settings, engine)
    try:
        assert adder(settings, engine, "bridge-a", backend).step(now()) == 1
    finally:
        backend.stop()
    # Then the job finished, its log is registered where the SE keeps it, and its
    # ending is told once
    with transaction(engine) as conn:
        assert states_of(conn, [job]) == {job: "finished"}
        assert [f.name for f in datasets.dataset_files(conn, f"{job}.log")] == [log.name]
    assert se_path(str(tmp_path), SITE, SCOPE, log.name).read_text() == job
    assert not staging_dir(str(tmp_path), SITE, job, 1).exists()
    assert reports_left(engine, [job]) == 0 and endings_of(engine, job) == 1


def test_a_refused_output_fails_its_job_only_and_the_batch_registers_the_rest(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    # Given three running jobs that staged their logs, and a file registered with other
    # content under the name the second job's log has
    ids = jobs_in(engine, S.RUNNING, 3)
    logs = [staged_log(tmp_path, i) for i in ids]
    taken = FileRecord(SCOPE, logs[1].name, uuid.uuid4().hex, 99, "00000063")
    with transaction(engine) as conn:
        datasets.register(conn, f"taken.{uuid.uuid4().hex}", [(taken, "/x")], None, now())
    # When one batch reports all three finished, each with its log, and a bridge passes
    report(engine, settings, "finished", dict(zip(ids, logs, strict=True)))
    backend = LocalDDM(settings, engine)
    try:
        adder(settings, engine, "bridge-a", backend).step(now())
    finally:
        backend.stop()
    # Then the second fails with the code of a taken name (never retried), the others
    # finish, and each of their logs is in its job's log dataset with a replica at the
    # site, moved from its staging directory into its place on the SE
    with transaction(engine) as conn:
        ends = ["finished", "failed", "finished"]
        assert states_of(conn, ids) == dict(zip(ids, ends, strict=True))
        refused = get_job(conn, ids[1])
        assert (refused["attempt"], refused["error_family"], refused["error_code"]) == (
            1,
            ErrorFamily.DDM.value,
            DDMError.OUTPUT_NAME_TAKEN,
        )
        assert "adler32" in refused["diagnostic"]
        for i, f in ((ids[0], logs[0]), (ids[2], logs[2])):
            did = f"{SCOPE}:{f.name}"
            assert [r.name for r in datasets.dataset_files(conn, f"{i}.log")] == [f.name]
            assert datasets.replica_sites(conn, [did]) == {did: {SITE}}
            assert se_path(str(tmp_path), SITE, SCOPE, f.name).read_text() == i
        assert f"{ids[1]}.log" not in {d["name"] for d in datasets.list_datasets(conn)}
    # And nothing is left in any staging directory
    assert not any(staging_dir(str(tmp_path), SITE, i, 1).exists() for i in ids)


class DiesAfterKeeping(LocalDDM):
    """A backend whose bridge dies once the files are kept, before it records them."""

    def add_outputs(
        self, site: str, job_id: str, attempt: int, files: Sequence[tuple[str, FileRecord]]
    ) -> dict[str, str]:
        super().add_outputs(site, job_id, attempt, files)
        raise KeyboardInterrupt("the bridge died")


def test_a_bridge_that_dies_after_keeping_the_files_leaves_them_to_another_once(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    # Given a job holding with its log reported
    (job,) = jobs_in(engine, S.RUNNING)
    log = staged_log(tmp_path, job)
    report(engine, settings, "finished", {job: log})
    # When a bridge keeps the log on the SE and dies before its transaction commits
    t = now()
    dying = DiesAfterKeeping(settings, engine)
    try:
        with pytest.raises(KeyboardInterrupt):
            adder(settings, engine, "bridge-a", dying).step(t)
    finally:
        dying.stop()
    with transaction(engine) as conn:
        assert states_of(conn, [job]) == {job: "holding"}
    assert not staging_dir(str(tmp_path), SITE, job, 1).exists()
    # Then another bridge leaves the report alone while the dead one's hold lasts
    backend = LocalDDM(settings, engine)
    try:
        other = adder(settings, engine, "bridge-b", backend)
        assert other.step(t + timedelta(seconds=30)) == 0
        # And takes it once the hold ran out: the log is kept again, harmlessly, and the
        # job finishes, its ending told once
        assert other.step(t + timedelta(seconds=61)) == 1
        assert other.step(t + timedelta(seconds=62)) == 0
    finally:
        backend.stop()
    with transaction(engine) as conn:
        assert states_of(conn, [job]) == {job: "finished"}
        assert [f.name for f in datasets.dataset_files(conn, f"{job}.log")] == [log.name]
    assert endings_of(engine, job) == 1


def test_two_bridges_never_take_the_same_report(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    # Given two jobs holding with their logs reported
    ids = jobs_in(engine, S.RUNNING, 2)
    report(engine, settings, "finished", {i: staged_log(tmp_path, i) for i in ids})
    # When one bridge takes the reports and, before it has dealt with them, another passes
    t = now()
    with transaction(engine) as conn:
        taken = holding.take_reports(conn, "bridge-a", t, t + timedelta(seconds=60), 10)
    with transaction(engine) as conn:
        also = holding.take_reports(conn, "bridge-b", t, t + timedelta(seconds=60), 10)
    # Then the second takes none; once the first lets go, the second takes both
    assert {e.job_id for e in taken} >= set(ids)
    assert not {e.job_id for e in also} & set(ids)
    with transaction(engine) as conn:
        holding.let_go(conn, "bridge-a")
        again = holding.take_reports(conn, "bridge-b", t, t + timedelta(seconds=60), 10)
        assert {e.job_id for e in again} >= set(ids)
        reports.remove(conn, ((i, 1) for i in ids))


def test_a_failed_job_with_a_log_is_retried_once_the_bridge_registered_it(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    # Given a running job whose pilot reports it failed with a retryable code, with its log
    (job,) = jobs_in(engine, S.RUNNING)
    log = staged_log(tmp_path, job)
    EventHandler(engine, settings)(
        [
            Incoming(
                JobEvent(
                    uuid.uuid4().hex,
                    job,
                    1,
                    PILOT,
                    "failed",
                    0.0,
                    1,
                    error_code=int(PilotError.STAGE_IN_FAILED),
                    files=[log],
                ),
                None,
                user_id="guest",
            )
        ]
    )
    with transaction(engine) as conn:
        assert states_of(conn, [job]) == {job: "holding"}
    # When the bridge passes
    backend = LocalDDM(settings, engine)
    try:
        adder(settings, engine, "bridge-a", backend).step(now())
    finally:
        backend.stop()
    # Then attempt 1 failed with the pilot's code, its log registered, and attempt 2 is on
    with transaction(engine) as conn:
        found = get_job(conn, job)
        assert found["attempt"] == 2
        assert [f.name for f in datasets.dataset_files(conn, f"{job}.log")] == [log.name]
        first = next(a for a in found["attempts"] if a["attempt"] == 1)
        assert (first["state"], first["error_code"]) == ("failed", PilotError.STAGE_IN_FAILED)


def test_what_an_attempt_that_is_over_staged_is_removed_by_the_bridge(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    # Given a job holding with its log reported, killed before the bridge passes
    (job,) = jobs_in(engine, S.RUNNING)
    report(engine, settings, "finished", {job: staged_log(tmp_path, job)})
    with transaction(engine) as conn:
        kill(conn, load(conn, [job], lock=True).values(), "by hand", now())
    # When the bridge passes
    backend = LocalDDM(settings, engine)
    try:
        assert adder(settings, engine, "bridge-a", backend).step(now()) == 1
    finally:
        backend.stop()
    # Then the job stays cancelled, nothing is registered, and its staging directory is gone
    with transaction(engine) as conn:
        assert states_of(conn, [job]) == {job: "cancelled"}
        assert f"{job}.log" not in {d["name"] for d in datasets.list_datasets(conn)}
    assert not staging_dir(str(tmp_path), SITE, job, 1).exists()
    assert reports_left(engine, [job]) == 0
