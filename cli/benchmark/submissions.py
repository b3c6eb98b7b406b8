"""Submissions published the way a load generator does: confirmed by RabbitMQ, no
answer awaited (the benchmarks time the service, not a client's round trips).
People and programs submit through ``broker.client`` instead."""

from __future__ import annotations

from collections.abc import Sequence

from kombu import Queue

from broker import topology
from broker.messaging.connection import broker_errors, connect
from broker.messaging.publisher import Outgoing, open_publisher
from broker.protocol import JobSpec, TaskSpec, encode
from broker.security import identity
from broker.settings import Settings


def publish_specs(settings: Settings, specs: Sequence[JobSpec]) -> None:
    """Publish submissions; return once RabbitMQ has confirmed every one."""
    queue = topology.Topology(settings.queue_type).submit_queue()
    publish_to(settings, queue, [encode(s) for s in specs])


def publish_task(settings: Settings, task: TaskSpec) -> None:
    """Publish a task submission; return once RabbitMQ has confirmed it."""
    publish_to(settings, topology.Topology(settings.queue_type).tasks_queue(), [encode(task)])


def publish_to(settings: Settings, queue: Queue, bodies: Sequence[bytes]) -> None:
    """Declare ``queue`` and publish ``bodies`` to it through its exchange, with confirms."""
    with connect(settings) as connection, broker_errors(connection, f"publishing to {queue.name}"):
        topology.declare(connection.default_channel, [queue])
        publisher = open_publisher(
            connection, settings.publish_window, settings.confirm_timeout_s, identity.of(settings)
        )
        publisher.publish(Outgoing(queue.exchange.name, queue.routing_key, b) for b in bodies)
