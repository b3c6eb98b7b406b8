"""The chaos suite's data run: jobs that write outputs, and a task over real files
copied by the DDM, on three sites, submitted in waves while the test kills the DDM
bridge and a broker process and freezes a pilot (SIGSTOP) past the lost-heartbeat
limit. Every payload records its run in a ledger, which the test holds against SQL;
every output is checked on the SE.

Runs on the session's RabbitMQ vhost and database (nothing here restarts them).
"""

from __future__ import annotations

import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import RowMapping, select

from broker.error_codes import DispatcherError, ErrorFamily
from broker.protocol import TaskSpec
from broker.scopes import owner_scope
from broker.settings import Settings
from broker.store import datasets
from broker.store.engine import open_engine, transaction
from broker.store.schema import job_attempts, jobs, subscriptions
from cli.benchmark.submissions import publish_task
from ddm_bridge.se import STAGING, checksum, se_dir, se_path
from tests.cli.processes import Pandamq, Service
from tests.harness import wait_for

SITES = 3
PILOTS_PER_SITE = 2
BROKERS = 2
WAVE = 30
TASK_FILES = 12
#: The whole run's budget: every wait takes what is left of it.
BUDGET_S = 170.0

SETTINGS = Settings(
    heartbeat_interval_s=1.0,
    lost_heartbeat_s=6.0,
    sent_timeout_s=30.0,
    watchdog_interval_s=1.0,
    claim_timeout_s=5.0,
    # the killed bridge's subscriptions are taken by its successor this soon
    lease_s=5.0,
)
ENV = {
    f"PANDAMQ_{name.upper()}": str(getattr(SETTINGS, name))
    for name in (
        "heartbeat_interval_s",
        "lost_heartbeat_s",
        "sent_timeout_s",
        "watchdog_interval_s",
        "claim_timeout_s",
        "lease_s",
    )
}


@pytest.fixture
def data_chaos(services: tuple[str, str], tmp_path: Path) -> Iterator[Pandamq]:
    p = Pandamq(*services, tmp_path)
    p.env |= ENV
    yield p
    p.close()


@dataclass
class Ledger:
    """The file every payload appends ``<job id> <work dir>`` to when it starts."""

    path: Path

    def runs(self) -> list[tuple[str, int, str]]:
        """(job, attempt, pilot) of each run; the work dir is ``<pilot>/<job>.<attempt>``."""
        found = []
        for line in self.path.read_text().splitlines():
            job_id, work = line.split(" ", 1)
            name, attempt = Path(work).name.rsplit(".", 1)
            assert name == job_id, line
            found.append((job_id, int(attempt), Path(work).parent.name))
        return found

    def step(self, output: str) -> str:
        """Shell that records the run, works a little, and ends its output with the work dir.

        A retry (a work dir not ending in ``.1``) works longer, so that the frozen
        pilot, woken once its attempt has failed, stages out before the retry does.
        """
        work = 'case "$PWD" in *.1) sleep 0.3;; *) sleep 2;; esac'
        return f'echo "$PANDAMQ_JOB_ID $PWD" >> {self.path}; {work}; echo "$PWD" >> {output}'


class Run:
    """The processes of the run, its jobs, and the budget left."""

    def __init__(self, p: Pandamq) -> None:
        self.p = p
        self.deadline = time.monotonic() + BUDGET_S
        self.sites = [p.new_site() for _ in range(SITES)]
        self.ledger = Ledger(p.tmp_path / "ledger")
        self.ledger.path.touch()
        self.ids: list[str] = []
        self.engine = open_engine(p.database_url)
        self.brokers = [p.start("serve", "broker") for _ in range(BROKERS)]
        self.bridge = p.start("serve", "ddm")
        self.pilots = [p.start("pilot", "--site", s) for s in self.sites * PILOTS_PER_SITE]

    def left(self) -> float:
        return max(1.0, self.deadline - time.monotonic())

    def wait(self, condition: Callable[[], Any], what: str) -> Any:
        def check() -> Any:
            self.p.check_services()
            return condition()

        return wait_for(check, timeout_s=self.left(), what=what)

    def rows(self, stmt: Any) -> list[RowMapping]:
        with transaction(self.engine) as conn:
            return list(conn.execute(stmt).mappings())

    def wave(self, n: int) -> None:
        """Publish WAVE jobs over the sites, each writing an output named for it."""
        specs = []
        for i in range(WAVE):
            name = f"out-{n}-{i}.txt"
            specs.append(
                {"command": self.ledger.step(name), "site": self.sites[i % SITES]}
                | {"output_files": [name], "name": f"wave {n} job {i}"}
            )
        self.ids += self.p.publish(specs)

    def task(self) -> str:
        """A task over TASK_FILES files at the first site, run at the others."""
        inputs = self.p.tmp_path / "inputs"
        inputs.mkdir()
        paths = []
        for n in range(TASK_FILES):
            paths.append(inputs / f"raw-{n}.dat")
            paths[-1].write_text(f"raw {n}\n" * 100)
        dataset = f"raw.{uuid.uuid4().hex[:8]}"
        site = self.sites[0]
        self.p.run("datasets", "add", dataset, *map(str, paths), "--site", site, "--scope", "data")
        task = TaskSpec(
            command=f"cat {{inputs}} > {{outputs}}; {self.ledger.step('{outputs}')}",
            input_dataset=dataset,
            output_dataset=f"{dataset}.out",
            id=f"t{uuid.uuid4().hex[:12]}",
            sites=self.sites[1:],
        )
        publish_task(Settings.load(environ=dict(self.p.env)), task)
        return task.id

    def finished(self) -> int:
        return Counter(self.p.states(self.ids).values())["finished"]

    def kill_bridge_once_subscribed(self) -> None:
        """SIGKILL the DDM bridge once it has subscribed a site to the task's inputs."""
        to = select(subscriptions.c.id).where(subscriptions.c.site.in_(self.sites[1:]))
        self.wait(lambda: self.rows(to), "a subscription of the task's inputs")
        self.bridge.popen.send_signal(signal.SIGKILL)
        self.bridge.wait(10)

    def freeze_busy_pilot(self) -> tuple[Service, str, int]:
        """SIGSTOP a pilot while its payload runs; it, and the job and attempt it runs."""

        def busy() -> tuple[Service, str, int] | None:
            for pilot in self.pilots:
                running = _payload_of(pilot)
                if running is not None and running[0] in self.ids:
                    return pilot, *running
            return None

        pilot, job_id, attempt = self.wait(busy, "a pilot running a payload")
        pilot.popen.send_signal(signal.SIGSTOP)
        return pilot, job_id, attempt

    def attempt(self, job_id: str, attempt: int) -> RowMapping | None:
        found = self.rows(
            select(job_attempts).where(
                job_attempts.c.job_id == job_id, job_attempts.c.attempt == attempt
            )
        )
        return found[0] if found else None

    def kill_broker(self) -> None:
        self.brokers[0].popen.send_signal(signal.SIGKILL)
        self.brokers[0].wait(10)
        self.brokers[0] = self.p.start("serve", "broker")


def _payload_of(pilot: Service) -> tuple[str, int] | None:
    """The job and attempt whose payload the pilot runs right now, from the payload's
    work directory (``<pilot>/<job>.<attempt>``); None if it runs none."""
    pid = pilot.popen.pid
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        work = Path(f"/proc/{children[0]}/cwd").readlink() if children else None
    except OSError:
        return None
    if work is None:
        return None
    job_id, attempt = work.name.rsplit(".", 1)
    return job_id, int(attempt)


@pytest.mark.timeout(BUDGET_S + 60)
def test_outputs_and_runs_hold_through_a_killed_bridge_and_a_frozen_pilot(
    data_chaos: Pandamq,
) -> None:
    # Given three sites with two pilots each, two broker processes and a DDM bridge,
    # a wave of jobs and a task over files at the first site, to run at the others
    run = Run(data_chaos)
    run.wave(1)
    task_id = run.task()
    # When the bridge is killed once it has subscribed a site to the task's inputs, and a
    # wave comes
    run.kill_bridge_once_subscribed()
    run.wave(2)
    run.bridge = data_chaos.start("serve", "ddm")
    # And a pilot is frozen mid-payload until the watchdog has failed its attempt,
    # while a third wave comes
    frozen, held_id, held_attempt = run.freeze_busy_pilot()
    run.wave(3)
    lost = run.wait(
        lambda: (a := run.attempt(held_id, held_attempt)) and a["state"] == "failed" and a,
        "the frozen pilot's attempt failed",
    )
    frozen.popen.send_signal(signal.SIGCONT)
    # And a broker process is killed
    run.wait(lambda: run.finished() >= WAVE, f"{WAVE} jobs finished")
    run.kill_broker()
    # Then every job, the task's too, finishes once
    task_ids = [r["id"] for r in run.rows(select(jobs.c.id).where(jobs.c.task_id == task_id))]
    assert len(task_ids) == TASK_FILES
    everyone = run.ids + task_ids
    run.wait(
        lambda: set(data_chaos.states(everyone).values()) == {"finished"}, "every job finished"
    )
    assert (lost["error_family"], lost["error_code"]) == (
        ErrorFamily.DISPATCHER,
        DispatcherError.LOST_HEARTBEAT,
    )
    attempts = run.rows(select(job_attempts).where(job_attempts.c.job_id.in_(everyone)))
    assert_each_finished_once_and_failures_explained(attempts, everyone)
    # And the ledger shows no attempt run twice nor on a pilot other than its claimer's
    assert_ledger_matches(run.ledger.runs(), attempts)
    # And every output is on its site's SE, registered, from the attempt that finished
    root = data_chaos.env["PANDAMQ_DDM_ROOT"]
    finals = run.rows(select(jobs).where(jobs.c.id.in_(everyone)))
    assert_outputs_on_the_se(run, root, finals)
    # And what the frozen pilot staged after it woke is removed, as is every staging
    # directory but those of attempts that failed
    woke = f"job {held_id}: finished of pilot"
    run.wait(lambda: woke in data_chaos.logs(), "the frozen pilot's report of its attempt")
    frozen_staging = se_dir(root, lost["site"]) / STAGING / f"{held_id}.{held_attempt}"
    assert not frozen_staging.exists()
    failed = {f"{a['job_id']}.{a['attempt']}" for a in attempts if a["state"] == "failed"}
    left = {d.name for s in run.sites for d in (se_dir(root, s) / STAGING).glob("*")}
    assert left <= failed, left - failed
    run.engine.dispose()


def assert_each_finished_once_and_failures_explained(
    attempts: list[RowMapping], ids: list[str]
) -> None:
    finished = Counter(a["job_id"] for a in attempts if a["state"] == "finished")
    assert set(finished) == set(ids)
    assert set(finished.values()) == {1}, "a job finished more than once"
    failed = [a for a in attempts if a["state"] == "failed"]
    assert all(a["error_family"] and a["error_code"] for a in failed), failed
    assert {a["state"] for a in attempts} <= {"finished", "failed"}


def assert_ledger_matches(runs: list[tuple[str, int, str]], attempts: list[RowMapping]) -> None:
    claimed = {(a["job_id"], a["attempt"]): a["pilot_id"] for a in attempts}
    repeated = [key for key, n in Counter((j, a) for j, a, _ in runs).items() if n > 1]
    assert not repeated, f"attempts run twice: {repeated}"
    strangers = [(j, a, p) for j, a, p in runs if claimed.get((j, a)) != p]
    assert not strangers, f"runs on a pilot that did not claim the attempt: {strangers}"
    ran = {(j, a) for j, a, _ in runs}
    unrecorded = [k for k in claimed if k not in ran and _finished(attempts, k)]
    assert not unrecorded, f"finished attempts with no run in the ledger: {unrecorded}"


def _finished(attempts: list[RowMapping], key: tuple[str, int]) -> bool:
    return any((a["job_id"], a["attempt"]) == key and a["state"] == "finished" for a in attempts)


def assert_outputs_on_the_se(run: Run, root: str, finals: list[RowMapping]) -> None:
    with transaction(run.engine) as conn:
        for job in finals:
            scope = owner_scope(job["owner"])
            for name in job["spec"]["output_files"]:
                did = f"{scope}:{name}"
                ((_, record),) = datasets.files_by_did(conn, [did]).values()
                assert datasets.replica_sites(conn, [did]) == {did: {job["site"]}}
                stored = se_path(root, job["site"], scope, name)
                assert (checksum(stored).size, checksum(stored).adler32) == (
                    record.size,
                    record.adler32,
                )
                last = stored.read_text().splitlines()[-1]
                assert last.endswith(f"/{job['pilot_id']}/{job['id']}.{job['attempt']}"), did
