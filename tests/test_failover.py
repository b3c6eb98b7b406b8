"""PostgreSQL beyond one server: a primary with a synchronous streaming replica that the
web monitor and the submitter's list queries read, and a failover (the primary crashes,
the replica is promoted) that the services wait out with no accepted job lost.

The servers are private (tests/pg_nodes.py); RabbitMQ is a vhost of the machine's.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from broker.client import Client
from broker.errors import PandaMQError
from broker.protocol import JobSpec
from broker.settings import Settings
from broker.store.engine import open_engine, transaction
from broker.store.schema import job_attempts
from tests.cli.processes import READY, Pandamq
from tests.conftest import test_settings
from tests.harness import System, wait_for
from tests.nodes import free_port
from tests.pg_nodes import ReplicatedPostgres
from tests.services import rabbitmq_vhost

pytestmark = [pytest.mark.services, pytest.mark.timeout(180)]


@pytest.fixture
def pair() -> Iterator[ReplicatedPostgres]:
    """A private primary and its synchronous replica, streaming."""
    servers = ReplicatedPostgres()
    try:
        servers.start()
        yield servers
    finally:
        servers.remove()


@pytest.fixture
def vhost() -> Iterator[str]:
    """A vhost of the machine's RabbitMQ, this test's own."""
    with rabbitmq_vhost() as url:
        yield url


def finished_attempts(database_url: str, ids: list[str]) -> Counter[str]:
    """How many finished attempts each job has."""
    engine = open_engine(database_url)
    try:
        with transaction(engine) as conn:
            rows = conn.execute(
                select(job_attempts.c.job_id, func.count())
                .where(job_attempts.c.job_id.in_(ids), job_attempts.c.state == "finished")
                .group_by(job_attempts.c.job_id)
            )
            return Counter({r[0]: r[1] for r in rows})
    finally:
        engine.dispose()


def monitor_jobs(port: int, site: str) -> list[dict[str, Any]]:
    """The finished jobs of ``site`` on the monitor's JSON page."""
    url = f"http://127.0.0.1:{port}/api/jobs?state=finished&site={site}"
    with urllib.request.urlopen(url, timeout=10) as response:
        jobs: list[dict[str, Any]] = json.load(response)["jobs"]
        return jobs


def test_the_monitor_and_list_queries_read_the_replica_and_a_job_the_primary(
    pair: ReplicatedPostgres, vhost: str, tmp_path: Path
) -> None:
    # Given a broker service on the primary, the replica as database_replica_url,
    # a `pandamq serve monitor` process, and 3 jobs finished
    database = pair.add_database()
    settings = test_settings(vhost, pair.url(database), tmp_path).replace(
        database_replica_url=pair.replica_url(database)
    )
    system = System(settings)
    p = Pandamq(vhost, settings.database_url, tmp_path)
    port = free_port()
    p.env["PANDAMQ_DATABASE_REPLICA_URL"] = settings.database_replica_url
    try:
        site = system.new_site()
        system.start_broker()
        system.start_pilot(site)
        first = system.submit(*[JobSpec(command="true", site=site) for _ in range(3)])
        assert set(system.wait_final(first).values()) == {"finished"}
        p.start("serve", "monitor", "--port", str(port)).wait_logged("monitor on")
        with Client(settings) as client:
            wait_for(lambda: len(client.jobs(site=site).jobs) == 3, what="3 jobs listed")
            # When the replica stops applying WAL and 2 more jobs finish on the primary
            pair.pause_replay()
            later = system.submit(*[JobSpec(command="true", site=site) for _ in range(2)])
            assert set(system.wait_final(later).values()) == {"finished"}
            # Then the list and the monitor, which read the replica, show the first 3 only
            assert {j.id for j in client.jobs(site=site).jobs} == set(first)
            assert {j["id"] for j in monitor_jobs(port, site)} == set(first)
            # And a job and a follower's catch-up, read on the primary, show the later jobs
            assert client.job(later[0]).job.state == "finished"
            assert {s.state for s in client.states(later).values()} == {"finished"}
            # And once the replica applies WAL again, the list and the monitor catch up
            pair.resume_replay()
            wait_for(lambda: len(client.jobs(site=site).jobs) == 5, what="5 jobs listed")
            assert {j["id"] for j in monitor_jobs(port, site)} == set(first + later)
    finally:
        p.close()
        system.close()


class Submitter:
    """Submits a few jobs at a time with the submitter's client until stopped; keeps the
    ids of every job the broker service accepted (answered so), and what went wrong
    with the submissions it did not answer."""

    def __init__(self, settings: Settings, site: str) -> None:
        self.settings, self.site = settings, site
        self.accepted: list[str] = []
        self.unanswered: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="submitter")

    def _run(self) -> None:
        with Client(self.settings) as client:
            while not self.stop.is_set():
                specs = [JobSpec(command="true", site=self.site) for _ in range(5)]
                try:
                    receipts = client.submit(specs)
                except PandaMQError as exc:
                    self.unanswered.append(str(exc))
                    continue
                self.accepted += [r.id for r in receipts if r.accepted]

    def close(self) -> None:
        """Stop submitting."""
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()


def test_a_failover_is_waited_out_with_no_accepted_job_lost(
    pair: ReplicatedPostgres, vhost: str, tmp_path: Path
) -> None:
    # Given two broker processes, a DDM bridge and a pilot whose database_url names both
    # servers
    # (libpq keeps the one that takes writes), the list queries on whichever is a
    # standby, and a submitter whose submissions are being accepted
    database = pair.add_database()
    p = Pandamq(vhost, pair.url(database), tmp_path)
    p.env["PANDAMQ_DATABASE_REPLICA_URL"] = pair.url(database, "prefer-standby")
    p.env["PANDAMQ_RECONNECT_MAX_DELAY_S"] = "1"
    submitter = None
    try:
        site = p.new_site()
        brokers = [p.start("serve", "broker") for _ in range(2)]
        for broker in brokers:
            broker.wait_logged(READY)
        p.start("serve", "ddm").wait_logged("ddm bridge ready")
        p.start("pilot", "--site", site)
        submitter = Submitter(Settings(broker_url=vhost, request_timeout_s=60.0), site)
        submitter.thread.start()
        wait_for(lambda: len(submitter.accepted) >= 50, what="50 jobs accepted")
        # When the primary crashes and the replica is promoted, as a manager does
        pair.failover()
        at_failover = len(submitter.accepted)
        wait_for(lambda: len(submitter.accepted) >= at_failover + 50, what="50 more accepted")
        submitter.close()
        # Then the service answered every submission, and every accepted job finished,
        # with exactly one finished attempt
        assert submitter.unanswered == []
        ids = submitter.accepted
        p.wait_states(ids, ["finished"] * len(ids), timeout_s=90)
        assert finished_attempts(p.database_url, ids) == Counter(dict.fromkeys(ids, 1))
        # And the brokers waited the switch out as an outage, and run on
        p.check_services()
        assert any("the database is unavailable" in b.log() for b in brokers), p.logs()
        # And a list, read on the new primary (the one server left), shows every job
        listed = p.json("jobs", "--site", site, "--state", "finished")
        assert {j["id"] for j in listed} >= set(ids)
    finally:
        if submitter is not None:
            submitter.close()
        p.close()
