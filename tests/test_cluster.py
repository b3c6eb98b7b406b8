"""A three-node RabbitMQ cluster with quorum queues: clients know every node and move
to another when theirs goes; ordering by priority holds without queue priorities."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from broker.protocol import JobSpec
from broker.settings import Settings
from broker.store.engine import transaction
from broker.store.schema import job_attempts
from tests.conftest import test_settings
from tests.harness import System, wait_for
from tests.nodes import RABBITMQ_START_S, RabbitMQCluster, RabbitMQNode
from tests.services import postgres_database
from tests.test_brokerage import higher_priority_is_claimed_first

#: Three nodes boot side by side and join; a node's loss, its return and the jobs around.
CLUSTER_TEST_TIMEOUT_S = 3 * RABBITMQ_START_S + 120.0

pytestmark = [pytest.mark.services, pytest.mark.timeout(CLUSTER_TEST_TIMEOUT_S)]


@pytest.fixture(scope="module")
def cluster() -> Iterator[RabbitMQCluster]:
    """Three RabbitMQ nodes of this module's own, joined into one cluster."""
    nodes = RabbitMQCluster(3)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.remove()


@pytest.fixture
def on_cluster(cluster: RabbitMQCluster, tmp_path: Path) -> Iterator[Settings]:
    """Settings naming every node of the cluster, quorum queues, a database of its own;
    every node runs again after the test."""
    with postgres_database() as database_url:
        settings = test_settings(cluster.add_vhost(), database_url, tmp_path)
        yield settings.replace(queue_type="quorum", reconnect_max_delay_s=1.0)
    for node in cluster.nodes:
        if not node.running:
            node.start()


def finished_attempts(system: System, ids: list[str]) -> Counter[str]:
    """How many finished attempts each job has."""
    with transaction(system.engine) as conn:
        rows = conn.execute(
            select(job_attempts.c.job_id, func.count())
            .where(job_attempts.c.job_id.in_(ids), job_attempts.c.state == "finished")
            .group_by(job_attempts.c.job_id)
        )
        return Counter({r[0]: r[1] for r in rows})


def busiest(cluster: RabbitMQCluster, url: str) -> RabbitMQNode:
    """The node that leads the most quorum queues of the vhost."""
    leaders = Counter(cluster.leaders(url).values())
    name = leaders.most_common(1)[0][0]
    return next(node for node in cluster.nodes if node.name == name)


def test_jobs_finish_once_each_when_the_node_leading_most_queues_is_killed(
    cluster: RabbitMQCluster, on_cluster: Settings
) -> None:
    # Given a broker service and a pilot that know every node, and jobs that finished
    system = System(on_cluster)
    try:
        site = system.new_site()
        system.start_broker()
        system.start_pilot(site)
        before = system.submit(*[JobSpec(command="true", site=site) for _ in range(5)])
        assert set(system.wait_final(before).values()) == {"finished"}
        # When the node leading most of the queues is killed (kill -9), jobs submitted
        # while it is down, and after it is back
        lost = busiest(cluster, on_cluster.broker_url)
        lost.kill()
        during = system.submit(*[JobSpec(command="true", site=site) for _ in range(5)])
        assert set(system.wait_final(during).values()) == {"finished"}
        lost.start()
        wait_for(lambda: len(cluster.running()) == 3, what="the node back in the cluster")
        after = system.submit(*[JobSpec(command="true", site=site) for _ in range(5)])
        # Then every job finished, with exactly one finished attempt each
        assert set(system.wait_final(after).values()) == {"finished"}
        ids = before + during + after
        assert finished_attempts(system, ids) == Counter(dict.fromkeys(ids, 1))
        # And the queues of the site's jobs and of submissions are empty
        cluster.wait_drained(on_cluster.broker_url)
    finally:
        system.close()


def test_higher_priority_is_claimed_first_on_quorum_queues(on_cluster: Settings) -> None:
    # Given a cluster's quorum queues (which have no priorities) and a site whose
    # activation keeps 3 jobs queued, and 12 jobs of shuffled priorities
    capped = System(
        on_cluster.replace(
            brokerage_interval_s=0.2, throttle_min_activated=3, throttle_running_factor=1.0
        )
    )
    try:
        higher_priority_is_claimed_first(capped, capped.new_site())
    finally:
        capped.close()
