"""``pandamq submit --wait`` of 1,000 jobs ends from the endings the broker service
pushes: the submitter holds no database URL, and asks the service one catch-up
query, not one per job or per second."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from broker import topology
from broker.metrics import REQUESTS
from cli.main import pandamq
from tests.harness import System
from tests.services import rabbitmq_vhost

JOBS = 1000


def _queries_answered() -> float:
    return REQUESTS.labels(queue=topology.QUERIES_QUEUE, outcome="answered")._value.get()


def test_submit_wait_of_a_thousand_jobs_ends_by_notifications(
    system: System, tmp_path: Path
) -> None:
    # Given a site with four pilots, and a file of 1,000 short jobs
    site = system.new_site()
    system.start_broker()
    for _ in range(4):
        system.start_pilot(site)
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps([{"command": "true", "site": site}] * JOBS))
    env = {
        "PANDAMQ_BROKER_URL": system.settings.broker_url,
        "PANDAMQ_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/x",
        "PANDAMQ_CONFIG": None,
    }
    before = _queries_answered()
    # When they are submitted with --wait by a submitter that cannot reach the database
    result = CliRunner(env=env).invoke(pandamq, ["submit", str(path), "--wait", "--timeout", "100"])
    # Then it exits 0 once every job has finished, having printed each id
    assert result.exit_code == 0, result.output
    ids = result.stdout.split()
    assert len(ids) == JOBS
    assert set(system.states(ids).values()) == {"finished"}
    # And it learnt of the endings from notifications: one catch-up query in all
    assert _queries_answered() - before <= 1


@pytest.mark.services
def test_submit_wait_where_no_broker_service_ever_ran_says_to_start_one(tmp_path: Path) -> None:
    # Given a new vhost where no broker service has declared the endings exchange yet
    path = tmp_path / "job.json"
    path.write_text('{"command": "true"}')
    with rabbitmq_vhost() as broker_url:
        env = {"PANDAMQ_BROKER_URL": broker_url, "PANDAMQ_CONFIG": None}
        # When a job is submitted with --wait
        result = CliRunner(env=env).invoke(pandamq, ["submit", str(path), "--wait"])
    # Then one line says what is missing and what to do, and the exit code says failed
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith("pandamq: error: the message broker refused binding a queue")
    assert line.endswith("is `pandamq serve` running on this vhost?")
