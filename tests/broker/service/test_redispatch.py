"""A site queue that lost its dispatches (a pilot purged it) is filled again, and a second
dispatch of a job is harmless: each job runs once (embedded and RabbitMQ + PostgreSQL)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from broker import topology
from broker.messaging.connection import connect
from broker.metrics import CLAIMS, REDISPATCHED
from broker.operations.activation import dispatch
from broker.operations.throttle import COLUMNS
from broker.protocol import JobSpec
from broker.service.redispatch import Redispatch
from broker.service.redispatch import queue_depth as queue_depth_of
from broker.settings import Settings
from broker.store.engine import transaction
from broker.store.schema import jobs
from pilot_agent.agent import Pilot, Slot
from tests.harness import System, publish, queue_depth, wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def quick(settings: Settings) -> Iterator[System]:
    """A system whose broker looks for lost dispatches every half second, after a second."""
    system = System(settings.replace(watchdog_interval_s=0.5, redispatch_after_s=1.0))
    yield system
    system.close()


def _redispatched(site: str) -> float:
    return REDISPATCHED.labels(site=site)._value.get()  # type: ignore[no-any-return]


def _refused_claims() -> float:
    return CLAIMS.labels(result="refused")._value.get()  # type: ignore[no-any-return]


def _waiting(system: System, count: int) -> tuple[list[str], str]:
    """``count`` jobs submitted to a new site, their dispatches in its queue."""
    site = system.new_site()
    system.start_broker()
    specs = [JobSpec(command="true", id=uuid.uuid4().hex, site=site) for _ in range(count)]
    ids = system.submit(*specs)
    queue = topology.job_queue_name(site, "SCORE")
    wait_for(lambda: queue_depth(system.settings, queue) == count, what="the dispatches")
    return ids, site


def _ran_once(system: System, ids: list[str]) -> None:
    assert system.wait_final(ids) == dict.fromkeys(ids, "finished")
    for job_id in ids:
        job = system.job(job_id)
        claimed = [t for t in job["transitions"] if t["to_state"] == "sent"]
        assert job["attempt"] == 1 and len(claimed) == 1, job["transitions"]


def test_a_purged_site_queue_is_dispatched_again_and_each_job_runs_once(quick: System) -> None:
    # Given three jobs waiting in their site's queue
    ids, site = _waiting(quick, 3)
    queue = topology.job_queue_name(site, "SCORE")
    before = _redispatched(site)
    # When the queue is purged
    with connect(quick.settings) as connection:
        connection.default_channel.queue_purge(queue)
    assert queue_depth(quick.settings, queue) == 0
    # Then the broker service dispatches the three again, and counts them
    wait_for(lambda: _redispatched(site) - before == 3, what="the jobs dispatched again")
    # (counted as they enter the outbox; the relay publishes them a moment later)
    wait_for(lambda: queue_depth(quick.settings, queue) == 3, what="the dispatches back")
    # And a pilot runs each to its end, once
    quick.start_pilot(site, max_jobs=3)
    _ran_once(quick, ids)


def test_a_second_dispatch_of_a_job_is_refused_at_its_claim(quick: System) -> None:
    # Given two jobs in their site's queue, each dispatched a second time
    ids, site = _waiting(quick, 2)
    with transaction(quick.engine) as conn:
        rows = conn.execute(select(*COLUMNS).where(jobs.c.id.in_(ids))).mappings().all()
    publish(quick.settings, *(dispatch(r) for r in rows))
    queue = topology.job_queue_name(site, "SCORE")
    wait_for(lambda: queue_depth(quick.settings, queue) == 4, what="the second dispatches")
    # When a pilot runs both jobs
    quick.start_pilot(site, max_jobs=2)
    _ran_once(quick, ids)
    # And another pilot takes the second dispatches
    refused = _refused_claims()
    late = Pilot(quick.settings, Slot(site), max_idle_s=2.0)
    # Then it runs nothing: each claim is refused, and the queue is empty
    assert late.run(threading.Event()) == 0
    assert _refused_claims() - refused == 2
    assert queue_depth(quick.settings, queue) == 0
    # And each job ran once, and stays finished
    _ran_once(quick, ids)
    assert _redispatched(site) == 0


def test_a_queue_short_for_one_pass_only_is_left_alone(settings: Settings) -> None:
    # Given two jobs in their site's queue, and the broker's own redispatch duty idle
    system = System(settings.replace(watchdog_interval_s=3600.0))
    try:
        ids, site = _waiting(system, 2)
        queue = topology.job_queue_name(site, "SCORE")
        with connect(settings) as connection:
            redispatch = Redispatch(
                system.engine, settings.replace(redispatch_after_s=0.0), queue_depth_of(connection)
            )
            assert redispatch.check() == 0
            # When a pilot holds one delivery while it claims (the queue one short), on
            # one pass only
            channel = connection.channel()
            held = channel.basic_get(queue, no_ack=False)
            assert held is not None
            assert redispatch.check() == 0
            channel.basic_reject(held.delivery_tag, requeue=True)
            wait_for(lambda: queue_depth(system.settings, queue) == 2, what="the delivery back")
            # Then nothing is dispatched again
            assert redispatch.check() == 0
            # But a queue found short on two passes in a row has its jobs dispatched again
            connection.default_channel.queue_purge(queue)
            assert redispatch.check() == 0
            assert redispatch.check() == 2
        wait_for(lambda: queue_depth(system.settings, queue) == 2, what="the jobs dispatched again")
        assert set(system.states(ids).values()) == {"activated"}
    finally:
        system.close()
