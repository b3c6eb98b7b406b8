"""The pilot factory with the local batch system: pilots as processes on this machine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from broker.factory.pilots import DIED
from broker.factory.submitter import LIVE_STATES, PilotState
from broker.factory.submitters.local import LocalSubmitter
from broker.protocol import JobSpec
from broker.settings import Settings
from broker.store import leases
from broker.store.engine import transaction
from tests.factory.conftest import FactoryThread
from tests.harness import System, wait_for

pytestmark = pytest.mark.services


@pytest.fixture
def system(rabbitmq_settings: Settings) -> Iterator[System]:
    """A broker service in this process on RabbitMQ; at most 4 pilots of 5 jobs each."""
    settings = rabbitmq_settings.replace(
        factory_max_running=4, factory_pilot_max_jobs=5, lease_s=2.0
    )
    s = System(settings)
    s.start_broker()
    yield s
    s.close()


@pytest.fixture
def factory(system: System) -> Iterator[FactoryThread]:
    """A factory serving a new site through the local batch system."""
    f = FactoryThread(system, LocalSubmitter(system.settings), system.new_site())
    yield f
    f.halt()
    f.end_leftovers()


@pytest.mark.timeout(240)
def test_four_pilots_are_kept_busy_until_the_queue_drains_then_none_is_submitted(
    system: System, factory: FactoryThread
) -> None:
    # Given 30 queued jobs at a site, and a factory allowed 4 running pilots
    ids = system.submit(*[JobSpec("sleep 0.3", site=factory.site) for _ in range(30)])
    # When the factory runs until every job is final
    factory.start()
    seen: list[int] = []

    def drained() -> bool:
        live = factory.count(PilotState.SUBMITTED, PilotState.RUNNING)
        assert live <= 4, f"{live} pilots live, more than the limit of 4"
        seen.append(live)
        return set(system.states(ids).values()) == {"finished"}

    wait_for(drained, 180, "every job finished")
    # Then 4 pilots ran at once, and their 5 jobs each took several rounds of pilots
    assert max(seen) == 4
    assert factory.factory.health.failing == set()
    # And once the idle pilots have left, nothing more is submitted
    factory.wait_all_ended()
    rows = factory.pilots()
    assert len(rows) >= 6, rows
    # And each pilot is accounted for: batch id, times, exit, the jobs it ran
    assert sum(int(str(r["jobs_claimed"])) for r in rows) == 30
    for row in rows:
        assert row["batch_system"] == "local" and row["batch_id"]
        assert row["submitted_at"] and row["ended_at"] and row["first_seen"]
        assert (row["state"], row["exit_code"]) == (PilotState.FINISHED, 0), row
    # When the queue stays empty for more cycles
    submitted_before = len(rows)
    factory.halt()
    for _ in range(3):
        assert factory.factory.cycle() == 0
    # Then no pilot was submitted after the queue drained
    assert len(factory.pilots()) == submitted_before


@pytest.mark.timeout(120)
def test_a_site_whose_pilots_die_without_a_job_is_flagged(
    system: System, caplog: pytest.LogCaptureFixture
) -> None:
    # Given queued jobs at a site whose pilots cannot start (their bundle is missing)
    missing = Path(system.settings.work_dir) / "no-such-pilot.pyz"
    settings = system.settings.replace(factory_pilot_bundle=str(missing))
    factory = FactoryThread(system, LocalSubmitter(settings), system.new_site())
    system.submit(*[JobSpec("true", site=factory.site) for _ in range(8)])
    wait_for(lambda: factory.activated() == 8, 30, "jobs activated")
    # When the factory runs until 5 of its pilots have ended
    try:
        factory.start()
        wait_for(lambda: factory.count(*DIED) >= 5, 60, "5 pilots dead")
        wait_for(lambda: factory.factory.health.failing, 30, "the site flagged")
    finally:
        factory.halt()
        factory.end_leftovers()
    # Then the site is flagged in the log and the metrics, and its dead pilots counted
    assert f"site {factory.site} is failing" in caplog.text
    labels = {"site": factory.site}
    assert REGISTRY.get_sample_value("pandamq_factory_site_failing", labels) == 1
    assert (REGISTRY.get_sample_value("pandamq_factory_pilots_died_total", labels) or 0) >= 5


@pytest.mark.timeout(240)
def test_two_factories_serving_one_site_submit_as_one(system: System) -> None:
    # Given two factories of the local batch system serving one site, each allowed 4
    # running pilots, and 20 queued jobs there
    site = system.new_site()
    two = [FactoryThread(system, LocalSubmitter(system.settings), site) for _ in range(2)]
    ids = system.submit(*[JobSpec("sleep 0.3", site=site) for _ in range(20)])
    try:
        # When both run
        for f in two:
            f.start()
        seen: list[int] = []

        def drained() -> bool:
            live = two[0].count(PilotState.SUBMITTED, PilotState.RUNNING)
            assert live <= 4, f"{live} pilots live: both factories submitted for the site"
            seen.append(live)
            return set(system.states(ids).values()) == {"finished"}

        wait_for(drained, 180, "every job finished")
        # Then the site's pilots were those of one factory at a time, and they ran the jobs
        assert max(seen) >= 1
        # When the factory holding the site stops, the other one serves it
        holder = next(f for f in two if f.factory.duties.holder in _lease_holders(system))
        other = next(f for f in two if f is not holder)
        holder.halt()
        more = system.submit(*[JobSpec("true", site=site) for _ in range(3)])
        wait_for(
            lambda: set(system.states(more).values()) == {"finished"}, 120, "served by the other"
        )
        assert other.factory.duties.holder in _lease_holders(system)
    finally:
        for f in two:
            f.halt()
            _end_own_pilots(f)


def _end_own_pilots(f: FactoryThread) -> None:
    """End the pilots this factory's local batch system started: the other factory,
    taking the site over, found them missing (they were not its processes)."""
    ids = [str(p["batch_id"]) for p in f.pilots() if p["batch_id"]]
    f.submitter.cancel(ids)
    wait_for(
        lambda: all(s.state not in LIVE_STATES for s in f.submitter.poll(ids).values()),
        60,
        "the factory's own pilots to end",
    )


def _lease_holders(system: System) -> set[str]:
    with transaction(system.engine) as conn:
        return {lease.holder for lease in leases.held(conn, "factory:").values()}
