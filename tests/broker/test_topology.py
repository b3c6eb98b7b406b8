"""Topology: names and resource types."""

from __future__ import annotations

import contextlib

import pytest
from kombu import Connection, Consumer

from broker import topology
from broker.messaging.connection import connect
from broker.messaging.publisher import Outgoing
from broker.settings import Settings
from tests.harness import publish, wait_for


@pytest.mark.parametrize(
    ("cores", "memory_mb", "expected"),
    [(1, 2000, "SCORE"), (1, 4000, "SCORE_HIMEM"), (8, 16000, "MCORE"), (8, 32000, "MCORE_HIMEM")],
)
def test_resource_type_of_a_job(cores: int, memory_mb: int, expected: str) -> None:
    assert topology.resource_type(cores, memory_mb) == expected


def test_a_slot_serves_its_own_class_and_smaller_ones_largest_first() -> None:
    assert topology.resource_types_served(1, 2000) == ["SCORE"]
    assert topology.resource_types_served(8, 32000) == [
        "MCORE_HIMEM",
        "MCORE",
        "SCORE_HIMEM",
        "SCORE",
    ]
    assert topology.resource_types_served(8, 8000) == ["MCORE", "SCORE_HIMEM", "SCORE"]


def test_job_queue_names_follow_the_contract() -> None:
    assert topology.job_queue_name("SITE_A", "SCORE") == "pandamq.jobs.SITE_A.SCORE"
    queue = topology.Topology("quorum").job_queue("SITE_A", "MCORE")
    assert queue.routing_key == "SITE_A.MCORE"
    assert queue.queue_arguments["x-queue-type"] == "quorum"


def test_private_queues_are_server_named_exclusive_and_bound_with_their_readers_key() -> None:
    shape = topology.Topology("quorum")
    follow = shape.follow_queue(["user.alice.#"])
    queues = [shape.reply_queue("wn1", "SITE_A"), shape.control_queue("wn1", "SITE_A"), follow]
    for queue in queues:
        assert queue.name == topology.SERVER_NAMED and queue.exclusive and queue.auto_delete
        assert not queue.durable and not queue.queue_arguments
    # Bound with the reader's own key, to exchanges the broker service declares
    assert [q.routing_key for q in queues[:2]] == ["SITE_A.wn1", "SITE_A.wn1"]
    assert [q.exchange.name for q in queues[:2]] == ["pandamq.replies", "pandamq.control"]
    assert all(q.exchange.no_declare for q in queues[:2])
    assert [(b.exchange.name, b.routing_key) for b in follow.bindings] == [
        ("pandamq.endings", "user.alice.#")
    ]
    assert all(b.exchange.no_declare for b in follow.bindings)


def test_a_private_queue_is_named_by_the_transport_and_gets_what_is_routed_by_key(
    settings: Settings,
) -> None:
    # Given the replies exchange, declared as the broker service does
    shape = topology.Topology(settings.queue_type)
    with connect(settings) as service:
        topology.declare(service.default_channel, [], [shape.replies_exchange()])
    # When a pilot declares its reply queue through a consumer, on one connection then
    # another, and the service publishes a reply by the pilot's key each time
    names = [_reply_by_key(settings, shape), _reply_by_key(settings, shape)]
    # Then each connection's queue was named by the transport, anew
    assert all(n.startswith("amq.gen-") for n in names) and names[0] != names[1]


def _reply_by_key(settings: Settings, shape: topology.Topology) -> str:
    """A pilot connection's reply queue, once it got a reply routed by its key: its name."""
    with connect(settings) as pilot:
        got: list[bytes] = []
        queue = shape.reply_queue("wn1", "SITE_A")
        consumer = Consumer(pilot.channel(), [queue], no_ack=True, on_message=got.append)
        consumer.consume()
        publish(settings, Outgoing(topology.REPLIES_EXCHANGE, "SITE_A.wn1", b"{}"))
        wait_for(lambda: _drained(pilot) or got, what="the reply, routed by key")
        # (the consumer declared a copy of it, which RabbitMQ named)
        (declared,) = consumer.queues
        return str(declared.name)


def _drained(connection: Connection) -> bool:
    with contextlib.suppress(TimeoutError):
        connection.drain_events(timeout=0.2)
    return False
