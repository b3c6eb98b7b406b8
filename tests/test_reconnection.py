"""The broker service and pilots wait out restarts of RabbitMQ and PostgreSQL and lose nothing.

These tests stop and start servers for real, so they run on a RabbitMQ node
and a PostgreSQL cluster of the session's own (``tests/nodes.py``), never on
the machine's shared ones.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from kombu import Queue
from sqlalchemy import func, select

from broker import topology
from broker.error_codes import DispatcherError
from broker.messaging.connection import connect
from broker.protocol import JobSpec
from broker.settings import Settings
from broker.states import JobState
from broker.store.clock import now
from broker.store.schema import jobs
from tests import harness
from tests.broker.service.jobs import jobs_in
from tests.cli.processes import LIFE, Pandamq, pandamq_processes
from tests.conftest import test_settings
from tests.harness import System, wait_for
from tests.nodes import RESTART_TEST_TIMEOUT_S, PostgresCluster, RabbitMQNode

pytestmark = [pytest.mark.services, pytest.mark.timeout(RESTART_TEST_TIMEOUT_S)]

#: Reconnect fast, so that a test does not wait long after a server is back.
FAST_RECONNECT = {"reconnect_initial_delay_s": 0.1, "reconnect_max_delay_s": 1.0}


@pytest.fixture
def settings_on_private(restartable_services: tuple[str, str], tmp_path: Path) -> Settings:
    """Test settings on the private servers, reconnecting within a second."""
    return test_settings(*restartable_services, tmp_path).replace(**FAST_RECONNECT)


@pytest.fixture
def private_system(settings_on_private: Settings) -> Iterator[System]:
    """A system in this process on the private servers; stopped and checked after the test."""
    s = System(settings_on_private)
    yield s
    s.close()


@pytest.fixture
def processes(restartable_services: tuple[str, str], tmp_path: Path) -> Iterator[Pandamq]:
    """``pandamq`` processes on the private servers, reconnecting within a second."""
    with pandamq_processes(restartable_services, tmp_path) as p:
        p.env |= {f"PANDAMQ_{k.upper()}": str(v) for k, v in FAST_RECONNECT.items()}
        yield p


def queue_depth(broker_url: str, name: str) -> int:
    """Messages ready in a queue of the test's vhost (0 while not declared yet)."""
    return harness.queue_depth(Settings(broker_url=broker_url), name)


def history(system: System, job_id: str) -> list[str]:
    """The states the job entered, in order."""
    return [t["to_state"] for t in system.job(job_id)["transitions"]]


def test_a_running_job_survives_a_rabbitmq_restart(
    private_system: System, rabbitmq_node: RabbitMQNode, tmp_path: Path
) -> None:
    # Given a broker service, a pilot, and a job whose payload runs until told to end
    site = private_system.new_site()
    private_system.start_broker()
    pilot = private_system.start_pilot(site)
    go, ended = tmp_path / "go", tmp_path / "ended"
    command = f"while [ ! -e {go} ]; do sleep 0.05; done; touch {ended}"
    (job_id,) = private_system.submit(JobSpec(command=command, site=site))
    wait_for(lambda: private_system.states([job_id]).get(job_id) == "running", what="job running")
    # When RabbitMQ stops, and the payload ends while it is down
    rabbitmq_node.stop()
    go.touch()
    wait_for(ended.exists, what="payload ended")
    # Then the pilot holds the job's last report
    wait_for(lambda: pilot.events_waiting > 0, what="the pilot to hold its report")
    # When RabbitMQ starts again
    rabbitmq_node.start()
    # Then the pilot delivers what it held, and the job ends finished, each state once, in order
    assert private_system.wait_final([job_id]) == {job_id: "finished"}
    assert history(private_system, job_id) == LIFE
    wait_for(lambda: pilot.events_waiting == 0, what="the pilot to deliver everything")


def test_jobs_flow_through_a_postgresql_restart(
    private_system: System, postgres_cluster: PostgresCluster, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a broker service, two pilots, and jobs flowing
    site = private_system.new_site()
    private_system.start_broker()
    for _ in range(2):
        private_system.start_pilot(site)
    ids = private_system.submit(*[JobSpec(command="sleep 0.2", site=site) for _ in range(20)])
    wait_for(lambda: "finished" in private_system.states(ids).values(), what="a job finished")
    # When PostgreSQL stops, the broker service notices, and PostgreSQL starts again
    postgres_cluster.stop()
    wait_for(
        lambda: "broker service: the database is unavailable" in caplog.text,
        what="the broker service to notice",
    )
    postgres_cluster.start()
    # Then every job ends finished, each state once, in one attempt
    assert set(private_system.wait_final(ids).values()) == {"finished"}
    for job_id in ids:
        job = private_system.job(job_id)
        assert history(private_system, job_id) == LIFE, job["transitions"]
        assert [a["attempt"] for a in job["attempts"]] == [1]
    # And no job was made twice
    with private_system.engine.connect() as conn:
        count = conn.scalar(select(func.count()).select_from(jobs).where(jobs.c.site == site))
    assert count == len(ids)


@pytest.mark.parametrize("down", ["rabbitmq", "postgresql"])
def test_services_started_during_an_outage_wait_for_the_server(
    down: str,
    processes: Pandamq,
    rabbitmq_node: RabbitMQNode,
    postgres_cluster: PostgresCluster,
) -> None:
    # Given a site, and a server that is down
    site = processes.new_site()
    server = rabbitmq_node if down == "rabbitmq" else postgres_cluster
    server.stop()
    # When the broker service and a pilot start
    serve = processes.start("serve")
    pilot = processes.start("pilot", "--site", site, "--max-jobs", "1")
    # Then the broker service says, attempt after attempt, what is down and when it retries
    # (`serve` runs the DDM bridge too, which waits out a database outage in its own lines)
    what = "RabbitMQ is unavailable" if down == "rabbitmq" else "the database is unavailable"
    what = f"broker service: {what}"
    wait_for(lambda: processes.check_services() or serve.log().count(what) >= 2, what="retries")
    assert "retry 2 in" in serve.log()
    # When the server is back
    server.start()
    # Then a job submitted now is run, and ends finished
    ids = processes.submit([{"command": "true", "site": site}])
    assert pilot.wait(timeout_s=30) == 0, processes.logs()
    processes.wait_states(ids, ["finished"])
    assert serve.stop() == 0, serve.log()


def test_a_claim_cut_off_by_a_rabbitmq_restart_is_made_again(
    processes: Pandamq, rabbitmq_node: RabbitMQNode, restartable_services: tuple[str, str]
) -> None:
    broker_url = restartable_services[0]
    claims_queue = topology.CLAIMS_QUEUE
    site_queue = topology.job_queue_name(site := processes.new_site(), "SCORE")
    # Given a job waiting in its site's queue, and no broker service to answer claims
    serve = processes.start("serve")
    (job_id,) = processes.submit([{"command": "true", "site": site}])
    wait_for(lambda: queue_depth(broker_url, site_queue) == 1, what="the job dispatched")
    assert serve.stop() == 0, serve.log()
    # And a pilot that took the job and waits for the answer to its claim
    pilot = processes.start(
        "pilot", "--site", site, "--max-jobs", "1", env={"PANDAMQ_CLAIM_TIMEOUT_S": "120"}
    )
    wait_for(lambda: queue_depth(broker_url, claims_queue) == 1, what="the claim sent")
    # When RabbitMQ restarts
    rabbitmq_node.restart()
    # Then the pilot claims the job again, rather than taking it anew from the site's queue
    wait_for(lambda: queue_depth(broker_url, claims_queue) == 2, what="the claim sent again")
    assert queue_depth(broker_url, site_queue) == 1
    assert f"claiming job {job_id} again" in pilot.log()
    # When another pilot takes the job's dispatch, and the broker service is back
    with connect(Settings(broker_url=broker_url)) as connection:
        assert Queue(site_queue).bind(connection.default_channel).get(no_ack=True) is not None
    processes.start("serve")
    # Then the claims are answered, and the pilot that claimed first runs the job
    assert pilot.wait(timeout_s=30) == 0, processes.logs()
    assert "ran 1 job(s)" in pilot.output()
    processes.wait_states([job_id], ["finished"])


def test_after_a_rabbitmq_outage_pilots_get_a_heartbeat_interval_to_come_back(
    settings_on_private: Settings,
    rabbitmq_node: RabbitMQNode,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a broker service that judges heartbeats often, with a lost-heartbeat timeout
    # shorter than its heartbeat interval
    caplog.set_level(logging.INFO, logger="broker.reconnect")
    interval = 3.0
    s = settings_on_private.replace(
        heartbeat_interval_s=interval, lost_heartbeat_s=1.0, watchdog_interval_s=0.1
    )
    system = System(s)
    try:
        system.start_broker()
        # When RabbitMQ goes down, and a running job's heartbeats stop meanwhile
        rabbitmq_node.stop()
        wait_for(lambda: "broker service: RabbitMQ is unavailable" in caplog.text, what="outage")
        (job_id,) = jobs_in(system.engine, JobState.RUNNING, at=now() - timedelta(seconds=60))
        # And RabbitMQ is back
        rabbitmq_node.start()
        back = wait_for(lambda: _logged(caplog, "broker service: back after"), what="reconnect")
        # Then the job fails for lost heartbeat only once a heartbeat interval has passed
        # since the service reconnected, not at its first watchdog pass
        wait_for(lambda: system.job(job_id)["attempt"] == 2, what="the job failed and retried")
        first = system.job(job_id)["attempts"][0]
        assert first["error_code"] == int(DispatcherError.LOST_HEARTBEAT)
        failed_at = datetime.fromisoformat(first["ended_at"]).timestamp()
        assert failed_at >= back.created + interval, failed_at - back.created
    finally:
        system.close()


def _logged(caplog: pytest.LogCaptureFixture, text: str) -> logging.LogRecord | None:
    """The first log record that says ``text``, if any."""
    return next((r for r in caplog.records if text in r.getMessage()), None)
