"""The pilot's link keeps job events through a RabbitMQ restart and sends them in order."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from kombu import Connection

from broker import topology
from broker.messaging.connection import connect
from broker.messaging.publisher import Outgoing
from broker.settings import Settings
from pilot_agent.link import Link
from tests.conftest import test_settings
from tests.nodes import RESTART_TEST_TIMEOUT_S, RabbitMQNode

pytestmark = [pytest.mark.services, pytest.mark.timeout(RESTART_TEST_TIMEOUT_S)]


def test_events_sent_while_rabbitmq_is_down_wait_and_go_out_in_order(
    restartable_services: tuple[str, str], rabbitmq_node: RabbitMQNode, tmp_path: Path
) -> None:
    # Given a connected link, and the events queue its events are routed to
    settings = test_settings(*restartable_services, tmp_path).replace(
        reconnect_initial_delay_s=0.1, reconnect_max_delay_s=0.5
    )
    declared: list[Connection] = []
    link = Link(settings, "pilot P", declared.append)
    stop = threading.Event()
    with connect(settings) as connection:
        topology.declare(connection.default_channel, [topology.Topology().events_queue()])
    assert link.open(stop) and len(declared) == 1
    # When RabbitMQ stops, and three events are sent
    rabbitmq_node.stop()
    texts = [f'"event {i}"' for i in range(3)]
    for text in texts:
        link.send(Outgoing(topology.EVENTS_EXCHANGE, "SITE.heartbeat", text.encode()))
    # Then all three wait
    assert link.waiting == 3
    # When RabbitMQ is back and the link opens again
    rabbitmq_node.start()
    assert link.open(stop)
    link.close()
    # Then the link declared its queues again, and the events arrived once each, in order
    assert len(declared) == 2 and link.waiting == 0
    assert taken(settings, topology.EVENTS_QUEUE) == texts


def taken(settings: Settings, queue: str) -> list[str]:
    """Take every message in ``queue``; their bodies."""
    bodies = []
    with connect(settings) as connection:
        bound = topology.Topology().events_queue().bind(connection.default_channel)
        assert bound.name == queue
        while (message := bound.get(no_ack=True)) is not None:
            body = message.body
            bodies.append(body.decode() if isinstance(body, bytes) else str(body))
    return bodies
