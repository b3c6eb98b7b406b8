"""The bridge's decisions, one pass at a time, on both backends."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from broker.error_codes import DDMError, ErrorFamily
from broker.protocol import JobSpec
from broker.settings import Settings
from broker.store import subscriptions
from broker.store.clock import now
from broker.store.engine import transaction
from ddm_bridge.backend import Report
from ddm_bridge.backends.local import LocalDDM
from ddm_bridge.bridge import DDMBridge
from ddm_bridge.se import Checksum, copy_verified
from tests.ddm_bridge.files import copy_by_hand, put_file, subscriptions_to
from tests.harness import System, wait_for


class StuckDDM:
    """A DDM that accepts subscriptions and never moves a file."""

    def __init__(self) -> None:
        self.subscribed: list[tuple[str, str]] = []
        self.cancelled: list[tuple[str, str]] = []
        self.closed: list[str] = []

    def subscribe(self, dataset: str, site: str) -> None:
        self.subscribed.append((dataset, site))

    def cancel(self, dataset: str, site: str) -> None:
        self.cancelled.append((dataset, site))

    def reports(self) -> list[Report]:
        return []

    def register(self, *_: object) -> int:
        raise AssertionError("not used here")

    def close(self, dataset: str) -> None:
        self.closed.append(dataset)

    def stop(self) -> None:
        pass


def test_a_subscription_without_progress_times_out_and_its_job_is_retried(system: System) -> None:
    # Given a job at B waiting for a file from A, and a DDM that never moves it
    site_a, site_b = system.new_site(), system.new_site()
    record = put_file(system.settings, system.engine, f"in.{uuid.uuid4().hex}", site_a, b"1")
    system.start_broker()
    spec = JobSpec(command="true", site=site_b, input_files=[record.did], max_attempts=2)
    (job_id,) = system.submit(spec)
    wait_for(lambda: system.states([job_id]).get(job_id) == "assigned")
    ddm = StuckDDM()
    bridge = DDMBridge(system.settings, system.engine, ddm)
    bridge.step()
    # (on the session's shared database, other tests' leftovers may be seen too)
    (first,) = [s for s in ddm.subscribed if s[1] == site_b]
    # When the bridge looks again after the timeout
    later = now() + timedelta(seconds=system.settings.subscription_timeout_s + 1)
    bridge.step(at=later)
    # Then the subscription failed, the attempt failed with the DDM timeout code,
    # and the next attempt waits on a new subscription
    assert first in ddm.cancelled
    job = system.job(job_id)
    assert job["attempt"] == 2
    failed = job["attempts"][0]
    assert (failed["state"], failed["error_family"], failed["error_code"]) == (
        "failed",
        ErrorFamily.DDM.value,
        DDMError.SUBSCRIPTION_TIMEOUT,
    )
    assert "no progress" in failed["diagnostic"]
    bridge.step(at=later)
    assert len([s for s in ddm.subscribed if s[1] == site_b]) == 2
    states = sorted(s["state"] for s in subscriptions_to(system.engine, site_b))
    assert states == ["failed", "requested"]
    assert system.states([job_id])[job_id] == "assigned"


def test_inputs_already_at_the_site_activate_the_job_at_once(system: System) -> None:
    # Given a file at site A
    site = system.new_site()
    record = put_file(system.settings, system.engine, f"in.{uuid.uuid4().hex}", site, b"here")
    system.start_broker()
    # When a job at A needs it (no bridge is running)
    (job_id,) = system.submit(JobSpec(command="true", site=site, input_files=[record.did]))
    # Then it is activated without a subscription
    wait_for(lambda: system.states([job_id]).get(job_id) == "activated")
    assert system.job(job_id)["transitions"][-1]["reason"] == "all input files are at the site"
    assert subscriptions_to(system.engine, site) == []


@pytest.fixture
def capped(settings: Settings) -> Iterator[System]:
    """A system whose site queues hold one activated job while none runs."""
    s = System(settings.replace(throttle_min_activated=1))
    yield s
    s.close()


def test_jobs_retried_after_a_failed_subscription_keep_to_the_sites_cap(capped: System) -> None:
    # Given 3 jobs at B, whose queue holds 1, waiting for files from A on a stuck subscription
    site_a, site_b = capped.new_site(), capped.new_site()
    name = f"in.{uuid.uuid4().hex}"
    files = [put_file(capped.settings, capped.engine, name, site_a, b"%d" % i) for i in range(3)]
    capped.start_broker()
    specs = [
        JobSpec(command="true", site=site_b, input_files=[f.did], max_attempts=2) for f in files
    ]
    ids = capped.submit(*specs)
    wait_for(lambda: list(capped.states(ids).values()) == ["assigned"] * 3, what="assigned")
    bridge = DDMBridge(capped.settings, capped.engine, StuckDDM())
    bridge.step()
    # And the files reach B meanwhile by other means
    for record in files:
        copy_by_hand(capped.settings, capped.engine, record, site_a, site_b)
    # When the subscription times out
    bridge.step(at=now() + timedelta(seconds=capped.settings.subscription_timeout_s + 1))
    # Then the second attempts, with every input at B, are activated only as far as the cap
    states = capped.states(ids)
    assert sorted(states.values()) == ["activated", "throttled", "throttled"], states
    assert {capped.job(j)["attempt"] for j in ids} == {2}
    # And a pilot at B runs them all as the queue drains
    capped.start_pilot(site_b)
    assert set(capped.wait_final(ids).values()) == {"finished"}


def test_a_restarted_bridge_counts_each_file_of_a_subscription_once(system: System) -> None:
    # Given 3 files at site A, and their dataset subscribed to site B
    site_a, site_b = system.new_site(), system.new_site()
    name = f"in.{uuid.uuid4().hex}"
    files = [put_file(system.settings, system.engine, name, site_a, b"%d" % i) for i in range(3)]
    with transaction(system.engine) as conn:
        subscriptions.create(conn, name, site_b, len(files), now())
    # And a bridge that recorded two of them at B and was killed while copying the third
    killed = threading.Event()

    def copy(source: Path, destination: Path, expected: Checksum) -> None:
        if destination.name == files[-1].name:
            killed.wait(timeout=30)
            raise OSError("the bridge was killed mid-copy")
        copy_verified(source, destination, expected)

    killed_mid_copy = LocalDDM(system.settings, system.engine, copy)
    first = DDMBridge(system.settings, system.engine, killed_mid_copy)
    second = DDMBridge(system.settings, system.engine)
    try:
        first.resume()
        wait_for(lambda: first.step() >= 0 and files_done(system, site_b) == 2, what="2 copied")
        # When a new bridge starts, and takes the subscription once the killed one's hold
        # ran out
        second.resume()
        later = now() + timedelta(seconds=system.settings.lease_s + 1)
        wait_for(
            lambda: (
                second.step(later) >= 0
                and subscriptions_to(system.engine, site_b)[0]["state"] == "done"
            ),
            what="the subscription done",
        )
    finally:
        killed.set()
        first.backend.stop()
        second.backend.stop()
    # Then every file is counted once, those it found at B already included
    (done,) = subscriptions_to(system.engine, site_b)
    assert (done["files_done"], done["files_total"]) == (3, 3)


def files_done(system: System, site: str) -> int:
    """The files placed of the (one) subscription to ``site``."""
    (subscription,) = subscriptions_to(system.engine, site)
    return int(subscription["files_done"])
