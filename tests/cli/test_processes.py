"""The ``pandamq`` command as an operator runs it: separate processes on RabbitMQ and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.processes import LIFE, READY, Pandamq, pandamq_processes

pytestmark = pytest.mark.services


@pytest.fixture
def processes(services: tuple[str, str], tmp_path: Path) -> Iterator[Pandamq]:
    """Runs ``pandamq`` on this session's vhost and database; kills leftovers afterwards."""
    with pandamq_processes(services, tmp_path) as p:
        yield p


def jobs_ran(pilot_output: str) -> int:
    """The count in a pilot's last words, ``pilot ID ran N job(s)``."""
    match = re.search(r"^pilot \S+ ran (\d+) job\(s\)$", pilot_output, re.MULTILINE)
    assert match, pilot_output
    return int(match.group(1))


@pytest.mark.timeout(180)
def test_twenty_jobs_finish_and_services_stop_on_sigterm(processes: Pandamq) -> None:
    # Given a broker service and two pilots at a new site
    site = processes.new_site()
    serve = processes.start("serve")
    serve.wait_logged(READY)
    pilots = [
        processes.start("pilot", "--site", site, "--heartbeat-interval", "1") for _ in range(2)
    ]
    # When 20 jobs are submitted from one file and followed to the end
    path = processes.spec_file(
        [{"command": f"echo job {i}", "site": site, "name": f"job {i}"} for i in range(20)]
    )
    result = processes.run(
        "submit", str(path), "--wait", "--timeout", "120", timeout_s=150, check=False
    )
    # Then submit exits 0, having printed 20 distinct job ids
    assert result.returncode == 0, processes.explain(result)
    ids = result.stdout.split()
    assert len(set(ids)) == len(ids) == 20, result.stdout
    # And `pandamq jobs` lists exactly those jobs, all finished at the site
    listed = processes.json("jobs", "--site", site)
    assert sorted(j["id"] for j in listed) == sorted(ids)
    assert {(j["state"], j["site"]) for j in listed} == {("finished", site)}
    # And `pandamq job` shows each state of a job's life once, in order
    for job_id in (ids[0], ids[-1]):
        job = processes.json("job", job_id)
        assert [t["to_state"] for t in job["transitions"]] == LIFE, job["transitions"]
    # When the services get SIGTERM
    codes = [p.stop(timeout_s=15) for p in [*pilots, serve]]
    # Then each stops cleanly, and the pilots ran each job once between them
    assert codes == [0, 0, 0], processes.logs()
    assert sum(jobs_ran(p.output()) for p in pilots) == 20


def test_pilot_with_max_jobs_1_exits_after_one_job(processes: Pandamq) -> None:
    # Given a broker service and a pilot that may run one job
    site = processes.new_site()
    processes.start("serve")
    pilot = processes.start("pilot", "--site", site, "--max-jobs", "1", "--heartbeat-interval", "1")
    # When two jobs are submitted
    ids = processes.submit([{"command": "true", "site": site}] * 2)
    # Then the pilot exits by itself, having run one job
    assert pilot.wait(timeout_s=60) == 0, pilot.log()
    assert jobs_ran(pilot.output()) == 1
    # And that job finished while the other still waits for a pilot
    processes.wait_states(ids, ["activated", "finished"])


def test_submit_wait_on_a_failing_job_exits_1_and_names_it(processes: Pandamq) -> None:
    # Given a broker service and a pilot
    site = processes.new_site()
    processes.start("serve").wait_logged(READY)
    processes.start("pilot", "--site", site, "--heartbeat-interval", "1")
    # When a good and a failing job are submitted with --wait
    path = processes.spec_file(
        [
            {"command": "true", "site": site},
            {"command": "echo bad input >&2; exit 3", "site": site, "max_attempts": 1},
        ]
    )
    result = processes.run(
        "submit", str(path), "--wait", "--timeout", "60", timeout_s=90, check=False
    )
    # Then submit prints both ids, exits 1, and names the failed job and only it
    assert result.returncode == 1, processes.explain(result)
    good, bad = result.stdout.split()
    assert result.stderr.splitlines() == [f"job {bad} ended failed"], processes.explain(result)
    # And the failed job keeps its exit code
    job = processes.json("job", bad)
    assert (job["state"], job["exit_code"]) == ("failed", 3)
    assert processes.states([good]) == {good: "finished"}
