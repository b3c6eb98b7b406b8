"""``pandamq submit --wait`` of 1,000 jobs ends from the endings the broker service
pushes: the submitter holds no database URL, and asks the service one catch-up
query, not one per job or per second."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from broker import topology
from broker.metrics import REQUESTS
from cli.main import pandamq
from tests.harness import System

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
