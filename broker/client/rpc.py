"""Requests and their answers on one connection: publish with ``reply_to`` and a
``correlation_id``, collect each ``Answer``.

On RabbitMQ the answers come through direct reply-to (``amq.rabbitmq.reply-to``):
no queue to declare and no permission to hold, and an asker that goes away
leaves nothing behind. The in-process transport has no such pseudo-queue, so
there the asker reads a private queue of its own. Requests are published with
confirms (an unroutable one, with no service queue bound, is refused at once).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any, Protocol

import amqp
from kombu import Connection, Consumer, Message, Producer, Queue

from broker import topology
from broker.api import Answer
from broker.errors import BrokerRefused, BrokerUnavailable, NoAnswer, PublishFailed
from broker.messaging.publisher import CONTENT_TYPE, Outgoing
from broker.protocol import decode_body

#: Requests a client keeps unconfirmed at most.
WINDOW = 1000


class Requests(Protocol):
    """Sends requests and waits for their answers."""

    def ask(self, requests: Sequence[Outgoing], timeout_s: float) -> list[Answer]:
        """Publish ``requests``; their answers in the same order, or ``NoAnswer``."""
        ...

    def send(self, requests: Sequence[Outgoing], timeout_s: float) -> list[str]:
        """Publish ``requests`` (confirmed, where the transport confirms); their
        correlation ids, to wait for with ``ask``'s answers' collector."""
        ...


def open_requests(connection: Connection, user_id: str) -> Requests:
    """The requests channel that suits the connection's transport."""
    if connection.transport.driver_type == "amqp":
        return DirectReplyTo(connection, user_id)
    return PrivateQueue(connection, user_id)


class _Answers:
    """Answers by correlation id, as they arrive."""

    def __init__(self) -> None:
        self.by_id: dict[str, Answer] = {}

    def take(self, correlation_id: str | None, body: bytes | str) -> None:
        if correlation_id:
            self.by_id[correlation_id] = decode_body(Answer, body)

    def wait(self, connection: Connection, ids: list[str], timeout_s: float) -> list[Answer]:
        deadline = time.monotonic() + timeout_s
        while any(i not in self.by_id for i in ids):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                got = sum(i in self.by_id for i in ids)
                raise NoAnswer(
                    f"the broker service answered {got} of {len(ids)} request(s) within "
                    f"{timeout_s:g} s; is `pandamq serve` running? (request_timeout_s)"
                )
            drain(connection, min(remaining, 1.0))
        return [self.by_id.pop(i) for i in ids]


def drain(connection: Connection, timeout_s: float) -> None:
    """Handle what arrives on ``connection`` within ``timeout_s``."""
    try:
        connection.drain_events(timeout=timeout_s)
    except TimeoutError:
        return
    except connection.channel_errors as exc:
        # RabbitMQ closes the channel of a request it refuses (a publish without permission).
        raise refused(exc) from exc
    except (*connection.connection_errors, OSError) as exc:
        raise BrokerUnavailable(
            f"lost the message broker while waiting for answers: {exc}"
        ) from exc


def refused(exc: Exception) -> BrokerRefused:
    """RabbitMQ's refusal of a request, said so that a person knows what to do."""
    if "NOT_FOUND" in str(exc) and "no exchange" in str(exc):
        return BrokerRefused(
            f"the message broker has no such exchange ({exc}): the broker service declares "
            "it when it starts; is `pandamq serve` running on this vhost?"
        )
    return BrokerRefused(f"the message broker refused a request: {exc}")


class DirectReplyTo:
    """RabbitMQ: requests and answers on one py-amqp channel, in confirm mode."""

    def __init__(self, connection: Connection, user_id: str) -> None:
        self._connection = connection
        self._user_id = user_id
        self._answers = _Answers()
        self._unconfirmed: set[int] = set()
        self._failures: list[str] = []
        self._next_tag = 1
        channel: amqp.Channel = connection.channel()
        channel.basic_consume(topology.DIRECT_REPLY_TO, no_ack=True, callback=self._on_answer)
        channel.confirm_select()
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)
        channel.events["basic_return"].add(self._on_return)
        self._channel = channel

    def ask(self, requests: Sequence[Outgoing], timeout_s: float) -> list[Answer]:
        """Publish with confirms, then wait for every answer."""
        deadline = time.monotonic() + timeout_s
        ids = self.send(requests, timeout_s)
        return self._answers.wait(self._connection, ids, max(0.0, deadline - time.monotonic()))

    def send(self, requests: Sequence[Outgoing], timeout_s: float) -> list[str]:
        """Publish with confirms; return once RabbitMQ has confirmed every request."""
        ids = [uuid.uuid4().hex for _ in requests]
        self._failures = []
        deadline = time.monotonic() + timeout_s
        for request, correlation_id in zip(requests, ids, strict=True):
            self._confirmed_below(WINDOW, deadline)
            self._send(request, correlation_id)
        self._confirmed_below(1, deadline)
        return ids

    def _send(self, request: Outgoing, correlation_id: str) -> None:
        message = amqp.Message(
            request.body,
            content_type=CONTENT_TYPE,
            content_encoding="utf-8",
            delivery_mode=2 if request.persistent else 1,
            reply_to=topology.DIRECT_REPLY_TO,
            correlation_id=correlation_id,
            user_id=self._user_id,
        )
        try:
            self._channel.basic_publish(
                message, exchange=request.exchange, routing_key=request.routing_key, mandatory=True
            )
        except self._connection.channel_errors as exc:
            raise refused(exc) from exc
        self._unconfirmed.add(self._next_tag)
        self._next_tag += 1

    def _confirmed_below(self, limit: int, deadline: float) -> None:
        while len(self._unconfirmed) >= limit:
            if time.monotonic() > deadline:
                raise NoAnswer("the message broker did not confirm the request(s) in time")
            drain(self._connection, 0.5)
        if self._failures:
            raise PublishFailed(self._failures[0])

    def _on_answer(self, message: Any) -> None:
        self._answers.take(message.properties.get("correlation_id"), message.body)

    def _on_ack(self, tag: int, multiple: bool) -> None:
        self._settle(tag, multiple)

    def _on_nack(self, tag: int, multiple: bool) -> None:
        self._failures.append("the message broker refused a request (nack)")
        self._settle(tag, multiple)

    def _on_return(self, exc: Any, exchange: str, routing_key: str, message: Any) -> None:
        self._failures.append(
            f"no queue takes requests on {exchange!r} ({routing_key!r}): the broker "
            "service declares it when it starts; is `pandamq serve` running on this vhost?"
        )

    def _settle(self, tag: int, multiple: bool) -> None:
        if multiple:
            self._unconfirmed = {t for t in self._unconfirmed if t > tag}
        else:
            self._unconfirmed.discard(tag)


class PrivateQueue:
    """The in-process transport: answers come to a queue of this asker's own."""

    def __init__(self, connection: Connection, user_id: str) -> None:
        self._connection = connection
        self._user_id = user_id
        self._answers = _Answers()
        channel = connection.channel()
        self._queue = Queue(
            f"pandamq.answers.{uuid.uuid4().hex}", exclusive=True, auto_delete=True, no_ack=True
        )
        self._consumer = Consumer(channel, [self._queue], on_message=self._on_answer, no_ack=True)
        self._consumer.consume()
        self._producer = Producer(connection.channel())

    def ask(self, requests: Sequence[Outgoing], timeout_s: float) -> list[Answer]:
        """Publish, then wait for every answer."""
        ids = self.send(requests, timeout_s)
        return self._answers.wait(self._connection, ids, timeout_s)

    def send(self, requests: Sequence[Outgoing], timeout_s: float) -> list[str]:
        """Publish (the in-process transport delivers at once)."""
        ids = [uuid.uuid4().hex for _ in requests]
        for request, correlation_id in zip(requests, ids, strict=True):
            self._producer.publish(
                request.body,
                exchange=request.exchange,
                routing_key=request.routing_key,
                content_type=CONTENT_TYPE,
                content_encoding="utf-8",
                reply_to=self._queue.name,
                correlation_id=correlation_id,
                user_id=self._user_id,
            )
        return ids

    def _on_answer(self, message: Message) -> None:
        self._answers.take(message.properties.get("correlation_id"), message.body)
