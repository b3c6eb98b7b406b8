"""The chaos suite on a cluster: 1,000 jobs through three broker processes, two DDM
bridges and pilots on three sites, on a three-node RabbitMQ cluster with quorum queues
and a PostgreSQL primary with a synchronous replica, while the test kills (``kill -9``)
the RabbitMQ node leading the most queues and brings it back, kills a broker process
three times, and fails PostgreSQL over to the replica.

Every server is the test's own (tests/nodes.py, tests/pg_nodes.py).
"""

from __future__ import annotations

import re
import signal
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import RowMapping, func, select

from broker import topology
from broker.protocol import TaskSpec
from broker.settings import Settings
from broker.store.engine import open_engine, transaction
from broker.store.schema import dataset_contents, job_attempts, jobs, outbox, replicas
from cli.benchmark.submissions import publish_task
from tests.budget import TEARDOWN_S, Budget
from tests.cli.processes import READY, Pandamq, Service
from tests.harness import dead_letters, wait_for
from tests.nodes import RABBITMQ_START_S, RABBITMQ_STOP_S, RabbitMQCluster, RabbitMQNode, free_port
from tests.pg_nodes import REPLICA_WAIT_S, ReplicatedPostgres
from tests.test_cluster import busiest

JOBS = 1000
#: Of the jobs, those of a task over files at the first site, run at the other two: each
#: needs its file copied by a DDM bridge.
TASK_FILES = 60
SITES = 3
PILOTS_PER_SITE = 3
BROKERS = 3
BRIDGES = 2
#: The jobs' share of the run (measured: see docs/reliability.md, "The chaos suite").
JOBS_S = 600.0
CHAOS_TIMEOUT_S = (
    3 * RABBITMQ_START_S
    + 2 * REPLICA_WAIT_S
    + RABBITMQ_STOP_S
    + RABBITMQ_START_S
    + JOBS_S
    + TEARDOWN_S
)

#: 4 to 7 minutes on this machine, by others' load (``-m 'not long'`` leaves it out).
pytestmark = [pytest.mark.services, pytest.mark.long, pytest.mark.timeout(CHAOS_TIMEOUT_S)]

#: Short timeouts, so that attempts cut off by a kill are failed and retried quickly.
CHAOS_ENV = {
    "PANDAMQ_QUEUE_TYPE": "quorum",
    "PANDAMQ_HEARTBEAT_INTERVAL_S": "1",
    "PANDAMQ_LOST_HEARTBEAT_S": "10",
    "PANDAMQ_SENT_TIMEOUT_S": "60",
    "PANDAMQ_WATCHDOG_INTERVAL_S": "1",
    # Under a load of 20 on 2 cores a claim took over 5 s to answer ~200 times in a run:
    # each such job waited sent_timeout_s in `sent`.
    "PANDAMQ_CLAIM_TIMEOUT_S": "20",
    "PANDAMQ_RECONNECT_MAX_DELAY_S": "1",
}


@pytest.fixture(scope="module")
def cluster() -> Iterator[RabbitMQCluster]:
    """Three RabbitMQ nodes of this module's own, joined into one cluster."""
    nodes = RabbitMQCluster(3)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.remove()


@pytest.fixture
def pair() -> Iterator[ReplicatedPostgres]:
    """A private PostgreSQL primary and its synchronous replica."""
    servers = ReplicatedPostgres()
    try:
        servers.start()
        yield servers
    finally:
        servers.remove()


@pytest.fixture
def chaos(cluster: RabbitMQCluster, pair: ReplicatedPostgres, tmp_path: Path) -> Iterator[Pandamq]:
    """Processes on every node of the cluster and on both PostgreSQL servers (libpq
    keeps the one that takes writes); list queries on the standby while there is one."""
    database = pair.add_database()
    p = Pandamq(cluster.add_vhost(), pair.url(database), tmp_path)
    p.env |= CHAOS_ENV
    p.env["PANDAMQ_DATABASE_REPLICA_URL"] = pair.url(database, "prefer-standby")
    yield p
    p.close()


class Bridge:
    """A DDM bridge process with a metrics port of its own, to count its copies."""

    def __init__(self, p: Pandamq) -> None:
        self.port = free_port()
        self.service = p.start("serve", "ddm", "--metrics-port", str(self.port))

    def copies(self) -> float:
        """The verified copies it made (its ``pandamq_file_copies_total``)."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        found = re.search(r'^pandamq_file_copies_total\{result="verified"\} (\S+)$', text, re.M)
        return float(found.group(1)) if found else 0.0


class Run:
    """The processes of the run, its jobs and what is done to them."""

    def __init__(self, p: Pandamq, budget: Budget) -> None:
        self.p, self.budget = p, budget
        self.sites = [p.new_site() for _ in range(SITES)]
        self.engine = open_engine(p.database_url)
        self.dataset = f"raw.{uuid.uuid4().hex[:8]}"
        self.ids: list[str] = []
        self.brokers: list[Service] = []
        self.bridges: list[Bridge] = []
        self.pilots: list[Service] = []

    def add_inputs(self) -> None:
        """TASK_FILES files at the first site, in one dataset."""
        inputs = self.p.tmp_path / "inputs"
        inputs.mkdir()
        paths = [inputs / f"raw-{n}.dat" for n in range(TASK_FILES)]
        for n, path in enumerate(paths):
            path.write_text(f"raw {n}\n" * 50)
        add = ["datasets", "add", self.dataset, *map(str, paths), "--site", self.sites[0]]
        self.p.run(*add, "--scope", "data", timeout_s=self.budget.wait_s(120))

    def start(self) -> None:
        """The broker processes, the DDM bridges and the pilots."""
        self.brokers = [self.p.start("serve", "broker") for _ in range(BROKERS)]
        for broker in self.brokers:
            broker.wait_logged(READY)
        self.bridges = [Bridge(self.p) for _ in range(BRIDGES)]
        self.pilots = [self.p.start("pilot", "--site", s) for s in self.sites * PILOTS_PER_SITE]

    def submit(self) -> None:
        """A task over the input files, to run at the other sites, and the rest of the
        jobs spread over the sites."""
        task = TaskSpec(
            command="cat {inputs} > {outputs}",
            input_dataset=self.dataset,
            output_dataset=f"{self.dataset}.out",
            id=f"t{uuid.uuid4().hex[:12]}",
            sites=self.sites[1:],
        )
        publish_task(Settings.load(environ=dict(self.p.env)), task)
        plain = JOBS - TASK_FILES
        specs = [{"command": "true", "site": self.sites[n % SITES]} for n in range(plain)]
        self.ids = self.p.publish(specs)
        task_jobs = select(jobs.c.id).where(jobs.c.task_id == task.id)
        found = wait_for(
            lambda: len(ids := self.rows(task_jobs)) == TASK_FILES and ids,
            timeout_s=self.budget.wait_s(120),
            what="the task's jobs",
        )
        self.ids += [r["id"] for r in found]

    def rows(self, stmt: Any) -> list[RowMapping]:
        with transaction(self.engine) as conn:
            return list(conn.execute(stmt).mappings())

    def finished(self) -> int:
        return Counter(self.p.states(self.ids).values())["finished"]

    def when_finished(self, count: int, action: Callable[[], None]) -> None:
        def reached() -> bool:
            self.p.check_services()
            return self.finished() >= count

        wait_for(reached, timeout_s=self.budget.left(), what=f"{count} jobs finished")
        action()

    def kill_broker(self, n: int) -> None:
        old = self.brokers[n]
        old.popen.send_signal(signal.SIGKILL)
        old.wait(self.budget.wait_s(10))
        self.brokers[n] = self.p.start("serve", "broker")

    def copies(self) -> float:
        """The verified copies both bridges made."""
        return sum(b.copies() for b in self.bridges)

    def input_replicas_copied(self) -> int:
        """Replicas of the task's input files at sites other than the first: one per copy
        made once."""
        stmt = (
            select(func.count())
            .select_from(
                replicas.join(dataset_contents, replicas.c.file_id == dataset_contents.c.file_id)
            )
            .where(dataset_contents.c.dataset == self.dataset, replicas.c.site != self.sites[0])
        )
        with transaction(self.engine) as conn:
            return int(conn.scalar(stmt) or 0)

    def outbox_left(self) -> int:
        with transaction(self.engine) as conn:
            return int(conn.scalar(select(func.count()).select_from(outbox)) or 0)


def test_every_job_finishes_once_through_a_node_loss_broker_kills_and_a_failover(
    budget: Budget, chaos: Pandamq, cluster: RabbitMQCluster, pair: ReplicatedPostgres
) -> None:
    # Given 3 broker processes, 2 DDM bridges, 3 pilots at each of 3 sites, and 1,000
    # jobs, 60 of them a task whose input files a bridge copies to the jobs' sites
    run = Run(chaos, budget)
    run.add_inputs()
    run.start()
    run.submit()
    broker_url = chaos.env["PANDAMQ_BROKER_URL"]
    lost: list[RabbitMQNode] = []
    # When the RabbitMQ node leading the most queues is killed (kill -9) and brought
    # back, a broker process is killed three times, and PostgreSQL fails over
    run.when_finished(100, lambda: lost.append(kill_busiest(cluster, broker_url)))
    run.when_finished(150, lambda: run.kill_broker(0))
    run.when_finished(250, lost[0].start)
    run.when_finished(350, lambda: run.kill_broker(1))
    run.when_finished(500, pair.failover)
    run.when_finished(650, lambda: run.kill_broker(2))
    # Then every job finishes, with exactly one finished attempt each
    run.when_finished(JOBS, lambda: None)
    attempts = run.rows(select(job_attempts).where(job_attempts.c.job_id.in_(run.ids)))
    assert_each_job_finished_once_and_failures_explained(attempts, run.ids)
    # And each file was copied once to each site it was needed at
    assert run.input_replicas_copied() >= TASK_FILES
    wait_for(lambda: run.copies() >= run.input_replicas_copied(), what="the bridges' counts")
    assert run.copies() == run.input_replicas_copied()
    # And nothing is left in the outbox, nor in any queue (the dead-letter queue held
    # only messages refused with a reason)
    wait_for(lambda: run.outbox_left() == 0, what="an empty outbox")
    letters = dead_letters(Settings(broker_url=broker_url))
    assert all(topology.REASON_HEADER in headers for _, headers in letters), letters
    cluster.wait_drained(broker_url)
    # And every RabbitMQ node runs again, and the promoted replica is the primary
    assert len(cluster.running()) == 3
    assert not pair.primary.in_recovery()
    failed = sum(a["state"] == "failed" for a in attempts)
    print(
        f"{len(attempts)} attempts ({failed} failed), {run.copies():.0f} copies,",
        f"{len(letters)} dead letters",
    )
    run.engine.dispose()


def kill_busiest(cluster: RabbitMQCluster, broker_url: str) -> RabbitMQNode:
    """``kill -9`` the node leading the most quorum queues of the vhost; that node."""
    node = busiest(cluster, broker_url)
    node.kill()
    return node


def assert_each_job_finished_once_and_failures_explained(
    attempts: list[RowMapping], ids: list[str]
) -> None:
    finished = Counter(a["job_id"] for a in attempts if a["state"] == "finished")
    assert set(finished) == set(ids)
    assert set(finished.values()) == {1}, "a job finished more than once"
    failed = [a for a in attempts if a["state"] == "failed"]
    assert all(a["error_family"] and a["error_code"] for a in failed), failed
    assert {a["state"] for a in attempts} <= {"finished", "failed"}, Counter(
        a["state"] for a in attempts
    )
