"""The service's queues of old names: what they still hold moves to the new names.

The service's queues were once named as their exchanges (``pandamq.claims``
both), and RabbitMQ's permissions, regular expressions over names, cannot
tell a queue from an exchange: a permission to publish on the exchange was
one to bind the queue. Now they are ``pandamq.service.<word>``
(``broker.topology``). On a deployment upgraded from then, a queue of an old
name may still hold messages accepted before the upgrade. The broker
service, once it has declared its topology, unbinds each old queue (nothing
new reaches it), moves every message it holds to the new queue (published
with a confirm, then acked: a crash in between leaves a copy in both, which
the handlers take as one) and deletes it once it is empty and nobody
consumes it; an older service still consuming it keeps it until the next
start.

RabbitMQ lets a publisher set ``user_id`` to its own user only, so a moved
message carries its sender in the ``x-pandamq-sent-by`` header, which the
consumer believes from the broker service's own user only (``sender``).
"""

from __future__ import annotations

import logging
from typing import Any

import amqp
from kombu import Connection, Queue

from broker import topology
from broker.errors import BrokerUnavailable
from broker.messaging.connection import refusal
from broker.metrics import MESSAGES_MOVED
from broker.security import identity

log = logging.getLogger(__name__)

#: The validated sender of a moved message ("" for none), set by the service that moved it.
SENT_BY_HEADER = "x-pandamq-sent-by"
#: How long a moved message's confirm is waited for.
CONFIRM_TIMEOUT_S = 30.0


def move_old_queues(connection: Connection, shape: topology.Topology, own_user: str) -> int:
    """Move what the queues of old names hold to their new ones, delete them when
    empty; how many messages moved. Nothing to do on the in-process transport."""
    if connection.transport.driver_type != "amqp":
        return 0
    new = {q.name: q for q in shape.service_queues()}
    moved = 0
    for old, name in topology.OLD_QUEUE_NAMES.items():
        try:
            moved += _move(connection, old, new[name], own_user)
        except connection.channel_errors as exc:
            raise refusal(connection, exc, f"moving queue {old}") from exc
        except (*connection.connection_errors, OSError) as exc:
            raise BrokerUnavailable(f"lost the message broker moving queue {old}: {exc}") from exc
    return moved


def _move(connection: Connection, old: str, queue: Queue, own_user: str) -> int:
    if not _exists(connection, old):
        return 0
    channel: amqp.Channel = connection.channel()
    try:
        channel.queue_unbind(old, queue.exchange.name, queue.routing_key)
        moved = 0
        while (message := channel.basic_get(old, no_ack=False)) is not None:
            channel.basic_publish_confirm(
                _copy(message, own_user),
                exchange="",
                routing_key=queue.name,
                mandatory=True,
                confirm_timeout=CONFIRM_TIMEOUT_S,
            )
            channel.basic_ack(message.delivery_tag)
            moved += 1
        MESSAGES_MOVED.labels(queue=old).inc(moved)
        deleted = _delete_if_done(connection, old)
        log.info(
            "moved %d message(s) from queue %s to %s; %s",
            moved,
            old,
            queue.name,
            "deleted it" if deleted else "kept it: a consumer still reads it",
        )
        return moved
    finally:
        if channel.is_open:
            channel.close()


def _exists(connection: Connection, name: str) -> bool:
    channel = connection.channel()
    try:
        channel.queue_declare(name, passive=True)
        return True
    except amqp.exceptions.NotFound:
        return False
    finally:
        if channel.is_open:
            channel.close()


def _delete_if_done(connection: Connection, name: str) -> bool:
    """Delete the queue if it is empty and unused; False if it is still in use."""
    channel = connection.channel()
    try:
        channel.queue_delete(name, if_unused=True, if_empty=True)
        return True
    except amqp.exceptions.PreconditionFailed:
        return False
    finally:
        if channel.is_open:
            channel.close()


def _copy(message: amqp.Message, own_user: str) -> amqp.Message:
    """The message as the service publishes it again: its sender in a header."""
    properties: dict[str, Any] = dict(message.properties)
    sender = properties.pop("user_id", None) or ""
    headers = dict(properties.pop("application_headers", None) or {})
    headers[SENT_BY_HEADER] = sender
    return amqp.Message(message.body, application_headers=headers, user_id=own_user, **properties)


def sender(user_id: str | None, headers: dict[str, Any] | None, own_user: str | None) -> str | None:
    """Who sent a delivery: its validated ``user_id``, or, for a message the broker service
    moved (its own service user, with the header), the sender the header names."""
    if own_user is None or user_id != own_user or not own_user.startswith(identity.SERVICE):
        return user_id
    if headers is None or SENT_BY_HEADER not in headers:
        return user_id
    return str(headers[SENT_BY_HEADER]) or None
