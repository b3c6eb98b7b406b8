"""Confirmed publishing with a window of outstanding messages.

On RabbitMQ a publisher never waits for each confirm: it keeps up to
``window`` messages unconfirmed and reads acks as they come (ARCHITECTURE.md,
performance budget). ``publish`` returns only when every message it was given
is confirmed, so a caller may then commit or ack what depended on them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import amqp
from kombu import Connection, Producer

from broker.errors import BrokerUnavailable, PublishFailed
from broker.messaging.connection import refusal

CONTENT_TYPE = "application/json"


@dataclass(frozen=True)
class Outgoing:
    """One message to publish."""

    exchange: str
    routing_key: str
    body: bytes
    headers: dict[str, Any] | None = None
    persistent: bool = True
    #: Unroutable messages fail the publish; off for replies to pilots that may be gone.
    mandatory: bool = True
    #: The request an answer belongs to (AMQP ``correlation_id``).
    correlation_id: str | None = None


class Publisher(Protocol):
    """Publishes messages and returns once the broker has confirmed all of them."""

    def publish(self, messages: Iterable[Outgoing]) -> int:
        """Publish and wait for confirms; return how many were published."""
        ...


def open_publisher(
    connection: Connection, window: int, timeout_s: float, user_id: str
) -> Publisher:
    """The right publisher for the connection's transport.

    Every message carries ``user_id``, the user the connection logged in as
    (``broker.security.identity.of``); RabbitMQ refuses any other value, so
    receivers can trust it.
    """
    if connection.transport.driver_type == "amqp":
        return ConfirmingPublisher(connection, window, timeout_s, user_id)
    return DirectPublisher(connection, user_id)


class DirectPublisher:
    """The in-process transport: a publish is complete when the call returns."""

    def __init__(self, connection: Connection, user_id: str) -> None:
        self._producer = Producer(connection.channel())
        self._user_id = user_id

    def publish(self, messages: Iterable[Outgoing]) -> int:
        """Publish each message synchronously."""
        count = 0
        for m in messages:
            self._producer.publish(
                m.body,
                exchange=m.exchange,
                routing_key=m.routing_key,
                content_type=CONTENT_TYPE,
                content_encoding="utf-8",
                headers=m.headers or {},
                delivery_mode=2 if m.persistent else 1,
                user_id=self._user_id,
                **_correlation(m),
            )
            count += 1
        return count


#: The first pause before nacked messages are published again; it doubles up to the most.
NACK_PAUSE_S = 0.2
NACK_PAUSE_MAX_S = 2.0


class ConfirmingPublisher:
    """RabbitMQ publisher confirms, pipelined over a window, on py-amqp's channel."""

    def __init__(self, connection: Connection, window: int, timeout_s: float, user_id: str) -> None:
        self._connection = connection
        self._user_id = user_id
        self._window = window
        self._timeout_s = timeout_s
        self._unconfirmed: dict[int, Outgoing] = {}
        self._open_channel()
        self._nacked: list[Outgoing] = []
        self._failures: list[str] = []

    def _open_channel(self) -> None:
        self._channel: amqp.Channel = self._connection.channel()
        self._channel.confirm_select()
        self._channel.events["basic_ack"].add(self._on_ack)
        self._channel.events["basic_nack"].add(self._on_nack)
        self._channel.events["basic_return"].add(self._on_return)
        self._next_tag = 1

    def publish(self, messages: Iterable[Outgoing]) -> int:
        """Publish with up to ``window`` unconfirmed; wait until all are confirmed.

        A message the broker nacks (a quorum queue electing a new leader after a
        node's loss nacks what it cannot take yet) is published again after a short
        pause, on a new channel (the old one may keep the queue's former leader),
        until it is confirmed or the confirm timeout has passed since the first
        nack; handlers take a message twice as once, so sending again is safe.
        """
        count = 0
        self._failures = []
        self._nacked = []
        try:
            for m in messages:
                self._wait_below(self._window)
                self._send(m)
                count += 1
            self._wait_below(1)
            self._publish_nacked_again()
        except self._connection.channel_errors as exc:
            raise refusal(self._connection, exc, "a publish") from exc
        except (*self._connection.connection_errors, OSError) as exc:
            raise BrokerUnavailable(f"lost the message broker while publishing: {exc}") from exc
        if self._failures:
            raise PublishFailed(
                f"{len(self._failures)} message(s) not accepted: {self._failures[0]}"
            )
        return count

    def _publish_nacked_again(self) -> None:
        deadline = time.monotonic() + self._timeout_s
        pause = NACK_PAUSE_S
        while self._nacked and time.monotonic() + pause < deadline:
            time.sleep(pause)
            pause = min(2 * pause, NACK_PAUSE_MAX_S)
            again, self._nacked = self._nacked, []
            self._channel.close()
            self._open_channel()
            for m in again:
                self._wait_below(self._window)
                self._send(m)
            self._wait_below(1)
        if self._nacked:
            self._failures.append(
                f"{len(self._nacked)} nacked by the broker for {self._timeout_s} s"
            )

    def _send(self, m: Outgoing) -> None:
        message = amqp.Message(
            m.body,
            content_type=CONTENT_TYPE,
            content_encoding="utf-8",
            delivery_mode=2 if m.persistent else 1,
            application_headers=m.headers or {},
            user_id=self._user_id,
            **_correlation(m),
        )
        self._channel.basic_publish(
            message, exchange=m.exchange, routing_key=m.routing_key, mandatory=m.mandatory
        )
        self._unconfirmed[self._next_tag] = m
        self._next_tag += 1

    def _wait_below(self, limit: int) -> None:
        deadline = time.monotonic() + self._timeout_s
        while len(self._unconfirmed) >= limit:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PublishFailed(
                    f"{len(self._unconfirmed)} message(s) not confirmed within {self._timeout_s} s"
                )
            try:
                self._connection.drain_events(timeout=min(remaining, 1.0))
            except TimeoutError:
                continue

    def _settle(self, tag: int, multiple: bool) -> list[Outgoing]:
        """Forget the confirmed (or nacked) messages; those messages."""
        tags = [t for t in self._unconfirmed if t <= tag] if multiple else [tag]
        return [m for t in tags if (m := self._unconfirmed.pop(t, None)) is not None]

    def _on_ack(self, tag: int, multiple: bool) -> None:
        self._settle(tag, multiple)

    def _on_nack(self, tag: int, multiple: bool) -> None:
        self._nacked += self._settle(tag, multiple)

    def _on_return(self, exc: Any, exchange: str, routing_key: str, message: Any) -> None:
        self._failures.append(f"no queue for exchange {exchange!r} routing key {routing_key!r}")


def _correlation(m: Outgoing) -> dict[str, str]:
    return {} if m.correlation_id is None else {"correlation_id": m.correlation_id}
