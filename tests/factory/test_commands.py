"""The factory as an operator runs it: `pandamq serve` with factory_sites, `pandamq factory`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from broker.store.engine import open_engine, transaction
from broker.store.schema import pilots
from tests.cli.processes import Pandamq, pandamq_processes
from tests.harness import wait_for

pytestmark = pytest.mark.services

FAST = {"PANDAMQ_FACTORY_INTERVAL_S": "0.5", "PANDAMQ_FACTORY_PILOT_IDLE_S": "2"}


@pytest.fixture
def processes(services: tuple[str, str], tmp_path: Path) -> Iterator[Pandamq]:
    """Runs ``pandamq`` on this session's vhost and database; kills leftovers afterwards."""
    with pandamq_processes(services, tmp_path) as p:
        yield p


def pilot_rows(processes: Pandamq, site: str) -> list[dict[str, object]]:
    """The site's rows in the pilots table."""
    engine = open_engine(processes.database_url)
    try:
        with transaction(engine) as conn:
            rows = conn.execute(select(pilots).where(pilots.c.site == site)).mappings()
            return [dict(r) for r in rows]
    finally:
        engine.dispose()


def wait_processes_gone(pids: list[str]) -> None:
    """Wait until the local pilots (process ids) have left on their own."""
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids), 60, "pilots gone")


@pytest.mark.timeout(180)
def test_serve_all_with_factory_sites_runs_jobs_no_one_started_a_pilot_for(
    processes: Pandamq,
) -> None:
    # Given `pandamq serve` told to keep a site supplied with pilots
    site = processes.new_site()
    serve = processes.start("serve", env={**FAST, "PANDAMQ_FACTORY_SITES": site})
    # When jobs are submitted to that site, and no pilot is started by hand
    ids = processes.submit([{"command": f"echo {i}", "site": site} for i in range(5)])
    # Then they finish, run by the factory's pilots
    processes.wait_states(ids, ["finished"] * 5, timeout_s=120)
    rows = pilot_rows(processes, site)
    assert rows and all(r["batch_system"] == "local" for r in rows)
    assert sum(int(str(r["jobs_claimed"])) for r in rows) == 5
    assert serve.stop() == 0, serve.log()
    wait_processes_gone([str(r["batch_id"]) for r in rows])


@pytest.mark.timeout(120)
def test_factory_once_submits_for_queued_work_and_nothing_without(processes: Pandamq) -> None:
    # Given a broker service and a DDM bridge (which moves the jobs on from holding), and
    # a site with 3 queued jobs and no pilot
    processes.env.update(FAST)
    site = processes.new_site()
    processes.start("serve", "broker")
    processes.start("serve", "ddm")
    ids = processes.submit([{"command": "true", "site": site} for _ in range(3)])
    processes.wait_states(ids, ["activated"] * 3)
    # When one factory cycle runs for it
    once = processes.run("factory", "--site", site, "--once", "--batch-system", "local")
    # Then it submitted a pilot per activated job, and they run the jobs
    assert once.stdout.strip() == "submitted 3 pilot(s)", processes.explain(once)
    processes.wait_states(ids, ["finished"] * 3, timeout_s=60)
    # When a cycle runs with nothing queued
    again = processes.run("factory", "--site", site, "--once")
    # Then it submits nothing
    assert again.stdout.strip() == "submitted 0 pilot(s)"
    wait_processes_gone([str(r["batch_id"]) for r in pilot_rows(processes, site)])
