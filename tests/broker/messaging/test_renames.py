"""The service's queues of old names, on an upgraded deployment: what they hold moves to
the new names, each message once, and the old queues go (real RabbitMQ)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from amqp.exceptions import NotFound

from broker import topology
from broker.messaging import renames
from broker.messaging.connection import connect
from broker.messaging.publisher import Outgoing
from broker.metrics import MESSAGES_MOVED
from broker.protocol import JobSpec, encode
from cli.benchmark.submissions import publish_specs
from tests.conftest import test_settings
from tests.harness import System, dead_letters, publish, queue_depth, wait_for
from tests.services import rabbitmq_vhost

pytestmark = [pytest.mark.services, pytest.mark.timeout(120)]


def _moved(old: str) -> float:
    return MESSAGES_MOVED.labels(queue=old)._value.get()  # type: ignore[no-any-return]


def _old_topology(system: System) -> None:
    """The service's queues as an earlier version declared them: each named as its
    exchange (the dead-letter queue ``pandamq.dead``), bound with the same key."""
    shape = topology.Topology(system.settings.queue_type)
    with connect(system.settings) as connection:
        channel = connection.default_channel
        for queue in shape.service_queues():
            old = next(o for o, n in topology.OLD_QUEUE_NAMES.items() if n == queue.name)
            queue.exchange.bind(channel).declare()
            channel.queue_declare(old, durable=True, arguments=queue.queue_arguments)
            channel.queue_bind(old, queue.exchange.name, queue.routing_key)


def test_messages_left_in_queues_of_old_names_are_moved_and_none_is_lost(
    services: tuple[str, str], tmp_path: Path
) -> None:
    with rabbitmq_vhost() as broker_url:
        system = System(test_settings(broker_url, services[1], tmp_path))
        try:
            # Given a deployment upgraded with submissions and a dead letter still in the
            # queues of old names, accepted by RabbitMQ before the upgrade
            site = system.new_site()
            _old_topology(system)
            specs = [JobSpec(command="true", id=uuid.uuid4().hex, site=site) for _ in range(30)]
            refused = Outgoing(topology.DEAD_LETTER_EXCHANGE, "x", b"refused before the upgrade")
            publish(
                system.settings,
                *(
                    Outgoing(topology.SUBMIT_EXCHANGE, topology.SUBMIT_KEY, encode(s))
                    for s in specs
                ),
                refused,
            )
            assert queue_depth(system.settings, "pandamq.submit") == 30
            before = _moved("pandamq.submit")
            # When the new broker service starts
            system.start_broker()
            # Then every submission was taken, once each
            ids = [s.id for s in specs]
            wait_for(lambda: len(system.states(ids)) == 30, what="every job accepted")
            assert set(system.states(ids).values()) <= {"activated", "throttled"}
            assert _moved("pandamq.submit") - before == 30
            # And the dead letter is in the new dead-letter queue
            assert [b for b, _ in dead_letters(system.settings)] == ["refused before the upgrade"]
            # And the queues of old names are gone
            with connect(system.settings) as connection:
                for old in topology.OLD_QUEUE_NAMES:
                    with pytest.raises(NotFound):
                        connection.channel().queue_declare(old, passive=True)
            # And a job submitted now reaches the service's new queue
            late = JobSpec(command="true", id=uuid.uuid4().hex, site=site)
            publish_specs(system.settings, [late])
            wait_for(lambda: late.id in system.states([late.id]), what="the late job accepted")
        finally:
            system.close()


def test_the_sender_of_a_moved_message_is_believed_from_the_service_only() -> None:
    moved = {renames.SENT_BY_HEADER: "pilot.S:A1"}
    # A message the service moved carries its sender
    assert renames.sender("service.broker", moved, "service.broker") == "pilot.S:A1"
    # A sender of none stays none, not the service
    empty = {renames.SENT_BY_HEADER: ""}
    assert renames.sender("service.broker", empty, "service.broker") is None
    # Anyone else's header is ignored, and so is a header on a shared non-service user
    assert renames.sender("pilot.S:A2", moved, "service.broker") == "pilot.S:A2"
    assert renames.sender("guest", moved, "guest") == "guest"
    # And a service message without the header is the service's
    assert renames.sender("service.broker", {}, "service.broker") == "service.broker"
