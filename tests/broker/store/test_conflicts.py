"""Transactions that lock the same rows on PostgreSQL: no deadlock where locks are taken
in the pipeline's order, and a conflict that still happens is what it is, not an outage.

SQLite's ``BEGIN IMMEDIATE`` serialises writers, so these interleavings cannot
happen there: the tests run on PostgreSQL only, with two threads, two connections
and real row locks.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, select

from broker.errors import TransactionConflict
from broker.messaging import consumer
from broker.messaging.consumer import Handler, Incoming
from broker.operations import retries, throttle
from broker.operations.activation import release
from broker.operations.retries import Failure
from broker.operations.throttle import Limits
from broker.protocol import ClaimReply, ClaimRequest, JobSpec
from broker.service.claims import _see_pilots
from broker.states import JobState
from broker.store import transitions
from broker.store.clock import now
from broker.store.engine import open_engine, transaction
from broker.store.jobs import load
from broker.store.migrate import upgrade
from broker.store.schema import jobs, pilots
from broker.store.transitions import Change
from tests.broker.service.jobs import jobs_in, row

pytestmark = pytest.mark.services

S = JobState
#: Long enough for PostgreSQL's deadlock detector (deadlock_timeout, 1 s by default).
BARRIER_TIMEOUT_S = 20.0


@pytest.fixture
def pg(services: tuple[str, str]) -> Iterator[Engine]:
    """This session's PostgreSQL database, migrated."""
    engine = open_engine(services[1])
    upgrade(engine)
    yield engine
    engine.dispose()


def together(*work: Callable[[], Any]) -> list[Any]:
    """Run each of ``work`` in a thread of its own; their results (an error is raised)."""
    with ThreadPoolExecutor(len(work)) as pool:
        futures = [pool.submit(w) for w in work]
        return [f.result(timeout=BARRIER_TIMEOUT_S * 2) for f in futures]


def test_two_retries_at_one_site_do_not_deadlock_on_its_row(
    pg: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two failed jobs at the same site
    ids = jobs_in(pg, S.FAILED, count=2)
    # And both retries made to meet after placing their new attempt at the site (which
    # locks the site's row FOR KEY SHARE, for its foreign key) and before they lock the
    # site for activation
    barrier = threading.Barrier(2, timeout=BARRIER_TIMEOUT_S)
    real_lock_sites = throttle.lock_sites

    def meeting_lock_sites(
        conn: Connection, names: Iterable[str], skip_locked: bool = False
    ) -> set[str]:
        wanted = list(names)
        if wanted:
            barrier.wait()
        return real_lock_sites(conn, wanted, skip_locked)

    monkeypatch.setattr(throttle, "lock_sites", meeting_lock_sites)

    def retry(job_id: str) -> int:
        with transaction(pg) as conn:
            job = load(conn, [job_id], lock=True)[job_id]
            decision = retries.decide(job, Failure("pilot", 1, 1))
            return retries.retry(conn, [(job, decision)], now(), Limits(min_activated=100))

    # When both run at once, on two connections
    started = together(lambda: retry(ids[0]), lambda: retry(ids[1]))
    # Then neither was chosen as a deadlock victim: both second attempts are activated
    assert started == [1, 1]
    assert [(row(pg, i)["attempt"], row(pg, i)["state"]) for i in ids] == [(2, "activated")] * 2


def test_a_deadlock_is_a_transaction_conflict_not_an_outage(pg: Engine) -> None:
    # Given two jobs, and two transactions that lock them in opposite orders
    first, second = jobs_in(pg, S.RUNNING, count=2)
    barrier = threading.Barrier(2, timeout=BARRIER_TIMEOUT_S)

    def lock(a: str, b: str) -> str:
        try:
            with transaction(pg) as conn:
                conn.execute(select(jobs.c.id).where(jobs.c.id == a).with_for_update())
                barrier.wait()
                conn.execute(select(jobs.c.id).where(jobs.c.id == b).with_for_update())
        except TransactionConflict as exc:
            return f"conflict: {exc}"
        return "committed"

    # When both run at once
    outcomes = together(lambda: lock(first, second), lambda: lock(second, first))
    # Then PostgreSQL ended one of them, and it surfaced as a conflict with its SQLSTATE
    assert sorted(o.split(":")[0] for o in outcomes) == ["committed", "conflict"]
    assert any("40P01" in o for o in outcomes), outcomes


def test_a_batch_that_loses_a_deadlock_is_handled_again_in_place(pg: Engine) -> None:
    # Given two jobs, and two batch handlers that lock them in opposite orders, meeting
    # in between on their first run
    first, second = jobs_in(pg, S.RUNNING, count=2)
    barrier = threading.Barrier(2, timeout=BARRIER_TIMEOUT_S)
    runs: list[str] = []

    def handler(a: str, b: str) -> Handler:
        def handle(batch: list[Incoming[Any]]) -> None:
            runs.append(a)
            with transaction(pg) as conn:
                conn.execute(select(jobs.c.id).where(jobs.c.id == a).with_for_update())
                if runs.count(a) == 1:
                    barrier.wait()
                conn.execute(select(jobs.c.id).where(jobs.c.id == b).with_for_update())

        return handle

    batches = [[Incoming(JobSpec(command="true", id=n), None)] for n in "ab"]
    # When both are handled at once, as two broker processes' consumers would
    together(
        lambda: consumer._handle(handler(first, second), batches[0]),
        lambda: consumer._handle(handler(second, first), batches[1]),
    )
    # Then no error went up (no outage, no dropped connection, no redelivery): the
    # deadlock victim ran again at once and committed, and nothing was refused
    assert len(runs) == 3 and set(runs) == {first, second}
    assert [b[0].refused for b in batches] == [None, None]


def test_the_periodic_release_skips_a_site_another_transaction_is_activating_at(
    pg: Engine,
) -> None:
    # Given three throttled jobs at a site with room for them
    site = f"SITE_{uuid.uuid4().hex[:8].upper()}"
    ids = jobs_in(pg, S.ASSIGNED, count=3, site=site)
    with transaction(pg) as conn:
        transitions.apply(conn, [Change(i, 1, S.ASSIGNED, S.THROTTLED) for i in ids], now())
    limits = Limits(min_activated=10)
    # When another transaction holds the site (a broker process activating there)
    with transaction(pg) as other:
        assert throttle.lock_sites(other, [site]) == {site}
        # Then the periodic release (skip_locked) does not wait for it (a wait would end
        # in an error after the lock timeout) and leaves the site's jobs to it
        with transaction(pg) as conn:
            conn.exec_driver_sql("SET LOCAL lock_timeout = '5s'")
            assert release(conn, now(), limits, {site}, skip_locked=True) == 0
    # And once that transaction ended, a release activates them
    with transaction(pg) as conn:
        assert release(conn, now(), limits, {site}) == 3
    assert {row(pg, i)["state"] for i in ids} == {"activated"}


def test_two_brokers_recording_the_same_new_pilot_both_commit(pg: Engine) -> None:
    # Given a new pilot whose claims of jobs at two sites reach two broker processes
    pilot = f"pilot-{uuid.uuid4().hex[:12]}"
    sites = [f"SITE_{uuid.uuid4().hex[:8].upper()}" for _ in range(2)]
    for site in sites:
        jobs_in(pg, S.RUNNING, site=site)
    requests = [ClaimRequest("j", 1, pilot, site, "reply") for site in sites]
    granted = ClaimReply("j", 1, granted=True)
    first_recorded = threading.Event()

    def first() -> None:
        with transaction(pg) as conn:
            _see_pilots(conn, [requests[0]], [granted], now())
            first_recorded.set()
            # (the second records the pilot meanwhile, not seeing this row yet)
            time.sleep(1)

    def second() -> None:
        assert first_recorded.wait(BARRIER_TIMEOUT_S)
        with transaction(pg) as conn:
            _see_pilots(conn, [requests[1]], [granted], now())

    # When both record it at once
    together(first, second)
    # Then both committed (neither failed on the pilot's key), counting both claims
    with transaction(pg) as conn:
        claimed = conn.execute(select(pilots.c.jobs_claimed).where(pilots.c.id == pilot))
        assert claimed.scalar_one() == 2
