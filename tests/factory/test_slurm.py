"""The pilot factory on a real single-node Slurm: sbatch'd pilot bundles run jobs to the end."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from broker.factory.submitter import PilotState
from broker.factory.submitters.slurm import SlurmSubmitter
from broker.protocol import JobSpec
from broker.settings import Settings
from broker.store.engine import transaction
from broker.store.schema import sites
from cli.bundle import build
from tests.factory.conftest import FactoryThread
from tests.factory.slurm_cluster import SlurmCluster, missing
from tests.harness import System, wait_for

pytestmark = pytest.mark.services


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A Slurm of this session's own; skipped only where it cannot be installed, never on CI."""
    reason = missing()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"Slurm is required on CI: {reason}")
        pytest.skip(f"no Slurm here: {reason}")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pilot bundle, as ``pandamq pilot-bundle`` builds it."""
    path = tmp_path_factory.mktemp("bundle") / "pilot.pyz"
    build(path)
    return path


@pytest.fixture
def system(
    rabbitmq_settings: Settings, slurm: SlurmCluster, bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[System]:
    """A broker service in this process; pilots are bundles Slurm runs, 2 at most."""
    for name, value in slurm.env.items():
        monkeypatch.setenv(name, value)
    settings = rabbitmq_settings.replace(
        factory_batch_system="slurm", factory_max_running=2, factory_pilot_bundle=str(bundle)
    )
    s = System(settings)
    s.start_broker()
    yield s
    s.close()


@pytest.fixture
def factory(system: System) -> Iterator[FactoryThread]:
    """A factory serving a new site through Slurm."""
    f = FactoryThread(system, SlurmSubmitter(system.settings), system.new_site())
    yield f
    f.halt()
    f.end_leftovers()


@pytest.mark.timeout(240)
def test_sbatched_pilots_run_jobs_to_finished(system: System, factory: FactoryThread) -> None:
    # Given 6 queued jobs at a site, and a factory that submits to Slurm
    ids = system.submit(*[JobSpec("echo ran", site=factory.site) for _ in range(6)])
    # When the factory runs
    factory.start()
    # Then every job finishes, run by pilots Slurm started
    assert set(system.wait_final(ids, timeout_s=180).values()) == {"finished"}
    factory.wait_all_ended()
    rows = factory.pilots()
    assert 1 <= len(rows) <= 6 and sum(int(str(r["jobs_claimed"])) for r in rows) == 6
    for row in rows:
        assert row["batch_system"] == "slurm" and str(row["batch_id"]).isdigit()
        assert (row["state"], row["exit_code"]) == (PilotState.FINISHED, 0), row
        assert row["started_at"] and row["ended_at"]


@pytest.mark.timeout(240)
def test_a_site_set_offline_has_its_pilots_cancelled(
    system: System, factory: FactoryThread, slurm: SlurmCluster
) -> None:
    # Given two long jobs running in two sbatch'd pilots at a site
    ids = system.submit(*[JobSpec("sleep 120", site=factory.site) for _ in range(2)])
    factory.start()
    wait_for(lambda: set(system.states(ids).values()) == {"running"}, 120, "jobs running")
    batch_ids = [str(r["batch_id"]) for r in factory.pilots()]
    # When the site is set offline
    with transaction(system.engine) as conn:
        conn.execute(update(sites).where(sites.c.name == factory.site).values(status="offline"))
    # Then the factory cancels its pilots in Slurm, and records them cancelled
    factory.wait_all_ended()
    assert {r["state"] for r in factory.pilots()} == {PilotState.CANCELLED}
    wait_for(lambda: not any(b in slurm.squeue() for b in batch_ids), 60, "pilots gone")

    # And the attempts they ran failed, and wait as new attempts for the site to come back
    def retried() -> bool:
        return all([a["state"] for a in system.job(i)["attempts"]][:1] == ["failed"] for i in ids)

    wait_for(retried, 60, "first attempts failed")
    assert set(system.states(ids).values()) == {"activated"}
    # And no pilot is submitted for them while the site is offline
    factory.halt()
    assert factory.factory.cycle() == 0
