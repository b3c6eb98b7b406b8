"""The chaos suite: 500 jobs through 3 broker processes and 6 pilots while the
test kills brokers and pilots with SIGKILL and restarts RabbitMQ and PostgreSQL.

Runs on a RabbitMQ node and a PostgreSQL cluster of the test session's own, so
restarting them disturbs nobody else.
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from broker import topology
from broker.settings import Settings
from broker.store.engine import open_engine, transaction
from broker.store.schema import job_attempts, jobs
from tests.budget import TEARDOWN_S, Budget
from tests.cli.processes import Pandamq, Service
from tests.harness import dead_letters, wait_for
from tests.nodes import (
    POSTGRES_CTL_S,
    PRIVATE_SERVERS_S,
    RABBITMQ_START_S,
    RABBITMQ_STOP_S,
    PostgresCluster,
    RabbitMQNode,
)

JOBS = 500
BROKERS = 3
PILOTS = 6
#: The jobs' share of the run: 500 jobs through the kills took 117 s at a load of 12
#: on 2 cores.
JOBS_S = 180.0
#: The whole run: the private servers' start (when this test is the first to ask for
#: them), a restart of each, the jobs and the teardown. Every wait below is what is left
#: of it, so a slow machine fails a step that says which, never a wait beyond the test's.
CHAOS_TIMEOUT_S = (
    PRIVATE_SERVERS_S + RABBITMQ_STOP_S + RABBITMQ_START_S + POSTGRES_CTL_S + JOBS_S + TEARDOWN_S
)

pytestmark = pytest.mark.timeout(CHAOS_TIMEOUT_S)

#: Short timeouts, so that the jobs of killed pilots are failed and retried quickly.
CHAOS_ENV = {
    "PANDAMQ_HEARTBEAT_INTERVAL_S": "1",
    "PANDAMQ_LOST_HEARTBEAT_S": "8",
    "PANDAMQ_SENT_TIMEOUT_S": "30",
    "PANDAMQ_WATCHDOG_INTERVAL_S": "1",
    "PANDAMQ_CLAIM_TIMEOUT_S": "5",
}


@pytest.fixture
def chaos(restartable_services: tuple[str, str], tmp_path: Path) -> Iterator[Pandamq]:
    broker_url, database_url = restartable_services
    p = Pandamq(broker_url, database_url, tmp_path)
    p.env |= CHAOS_ENV
    yield p
    p.close()


class Run:
    """The processes of the run and what has been done to them."""

    def __init__(self, p: Pandamq, site: str, ids: list[str], budget: Budget) -> None:
        self.p, self.site, self.ids, self.budget = p, site, ids, budget
        self.brokers = [p.start("serve") for _ in range(BROKERS)]
        self.pilots = [p.start("pilot", "--site", site) for _ in range(PILOTS)]

    def finished(self) -> int:
        return Counter(self.p.states(self.ids).values())["finished"]

    def when_finished(self, count: int, action: Callable[[], None]) -> None:
        wait_for(
            lambda: self.finished() >= count,
            timeout_s=self.budget.left(),
            what=f"{count} jobs finished",
        )
        action()

    def kill_broker(self, n: int) -> None:
        old = self.brokers[n]
        old.popen.send_signal(signal.SIGKILL)
        old.wait(self.budget.wait_s(10))
        self.brokers[n] = self.p.start("serve")

    def kill_busy_pilot(self) -> None:
        """SIGKILL a pilot whose payload is running; start another in its place."""
        victim = wait_for(
            self._busy_pilot, timeout_s=self.budget.wait_s(30), what="a pilot running a payload"
        )
        victim.popen.send_signal(signal.SIGKILL)
        victim.wait(self.budget.wait_s(10))
        self.pilots[self.pilots.index(victim)] = self.p.start("pilot", "--site", self.site)

    def _busy_pilot(self) -> Service | None:
        engine = open_engine(self.p.database_url)
        try:
            with transaction(engine) as conn:
                running = conn.execute(select(jobs.c.pilot_id).where(jobs.c.state == "running"))
                pids = {int(r.pilot_id.split("-")[-2]) for r in running}
        finally:
            engine.dispose()
        # SQL may still say running after a 0.1 s payload ended: the pilot must have its
        # payload process right now, or killing it fails no attempt.
        return next((s for s in self.pilots if s.popen.pid in pids and _has_child(s)), None)


def _has_child(service: Service) -> bool:
    """Whether the process has a child process (a pilot: its payload) at this moment."""
    pid = service.popen.pid
    try:
        return bool(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
    except OSError:
        return False


def test_every_job_finishes_once_through_kills_and_restarts(
    budget: Budget, chaos: Pandamq, rabbitmq_node: RabbitMQNode, postgres_cluster: PostgresCluster
) -> None:
    # Given 500 short jobs, 3 broker processes and 6 pilots
    site = chaos.new_site()
    specs = [{"command": "sleep 0.1", "site": site, "name": f"chaos {n}"} for n in range(JOBS)]
    ids = chaos.publish(specs)
    run = Run(chaos, site, ids, budget)
    # When brokers are killed three times, two pilots in mid-payload, and
    # RabbitMQ and PostgreSQL are restarted once each
    run.when_finished(40, lambda: run.kill_broker(0))
    run.when_finished(80, run.kill_busy_pilot)
    run.when_finished(120, lambda: run.kill_broker(1))
    run.when_finished(160, rabbitmq_node.restart)
    run.when_finished(220, run.kill_busy_pilot)
    run.when_finished(260, lambda: run.kill_broker(2))
    run.when_finished(320, postgres_cluster.restart)
    # Then every job finishes
    run.when_finished(JOBS, lambda: None)
    assert_each_job_finished_once_and_failures_explained(chaos.database_url, ids)
    # And nothing is left unexplained in the dead-letter queue
    letters = dead_letters(Settings(broker_url=chaos.env["PANDAMQ_BROKER_URL"]))
    assert all(topology.REASON_HEADER in headers for _, headers in letters), letters


def assert_each_job_finished_once_and_failures_explained(database_url: str, ids: list[str]) -> None:
    engine = open_engine(database_url)
    try:
        with transaction(engine) as conn:
            attempts = list(conn.execute(select(job_attempts)).mappings())
    finally:
        engine.dispose()
    finished = Counter(a["job_id"] for a in attempts if a["state"] == "finished")
    assert set(finished) == set(ids)
    assert set(finished.values()) == {1}, "a job finished more than once"
    failed = [a for a in attempts if a["state"] == "failed"]
    unexplained = [a for a in failed if a["error_family"] is None or a["error_code"] is None]
    assert not unexplained, unexplained
    # the two pilots killed in mid-payload left attempts the watchdog failed
    assert sum(a["error_family"] == "dispatcher" for a in failed) >= 2, failed
    assert {a["state"] for a in attempts} <= {"finished", "failed"}, Counter(
        a["state"] for a in attempts
    )
