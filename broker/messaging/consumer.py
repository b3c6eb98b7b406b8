"""Batched consuming: take a batch of deliveries, handle it, then ack once.

Each queue gets its own channel, so an ack with ``multiple`` covers exactly
that queue's batch. A handler commits its SQL work before returning; only
then are the deliveries acked, so a crash in between redelivers them and the
handler, being idempotent, does nothing twice. Bodies that do not decode, and
messages the handler refuses, are dead-lettered with a reason header.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from kombu import Connection, Consumer, Message, Queue

from broker import failpoints
from broker.conflicts import retried
from broker.errors import BrokerUnavailable, RecoverableError, SpecError
from broker.messaging import answers, renames
from broker.messaging.dead_letters import dead_letter
from broker.messaging.publisher import CONTENT_TYPE, Publisher
from broker.metrics import FIELDS_TRIMMED
from broker.protocol import decode_body, trim

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class Incoming(Generic[T]):
    """A decoded delivery; a handler calls ``refuse`` to turn it down, ``answer`` to reply.

    A refused request (a message with ``reply_to``) is answered with the reason;
    any other refused message is dead-lettered with it.
    """

    message: T
    delivery: Message
    refused: str | None = field(default=None)
    #: The sender's user, as RabbitMQ validated it (``user_id``); None if the message has none.
    user_id: str | None = field(default=None)
    refused_as: answers.ErrorKind = field(default="bad_input")
    answer: answers.Reply | None = field(default=None)

    def refuse(self, reason: str, kind: answers.ErrorKind = "bad_input") -> None:
        """Turn this message down after the batch, with ``reason``."""
        self.refused = reason
        self.refused_as = kind

    def reply(self, data: object = None, cursor: str = "") -> None:
        """Answer the request (if it asked for an answer) once the batch is committed."""
        self.answer = answers.Reply(data, cursor)

    @property
    def reply_to(self) -> str | None:
        """Where the sender waits for an answer; None for a message that asks for none."""
        return answers.reply_address(self.delivery)


Handler = Callable[[list[Incoming[Any]]], None]


@dataclass
class _Stream:
    queue: Queue
    message_type: type[Any]
    handler: Handler
    #: Pilots' queues (events, claims): served again after each batch of the others,
    #: because a pilot waits for its answer.
    urgent: bool = False
    #: Bodies longer than this are refused unread (None: no limit).
    max_bytes: int | None = None
    channel: Any = None
    buffer: list[Message] = field(default_factory=list)


#: How long deliveries are gathered into batches after the first one arrives.
GATHER_S = 0.005
#: "Do not wait": a zero timeout would make the socket non-blocking, which py-amqp does not expect.
NO_WAIT_S = 0.0005


class BatchConsumer:
    """Consumes several queues; hands each queue's deliveries to its handler in batches."""

    def __init__(
        self,
        connection: Connection,
        publisher: Publisher,
        batch_size: int,
        after_batch: Callable[[], object] = lambda: None,
        max_bytes: int | None = None,
        own_user: str | None = None,
    ) -> None:
        """``after_batch`` runs after each handled batch (the broker relays its outbox);
        bodies longer than ``max_bytes`` (``max_message_bytes``) are refused unread;
        ``own_user``, the broker service's user, is believed on whom a message it moved
        was sent by (``broker.messaging.renames``)."""
        self._own_user = own_user
        self._after_batch = after_batch
        self._max_bytes = max_bytes
        self._connection = connection
        self._publisher = publisher
        self._batch_size = batch_size
        self._streams: list[_Stream] = []
        self._amqp = connection.transport.driver_type == "amqp"

    def add(
        self,
        queue: Queue,
        message_type: type[T],
        handler: Handler,
        urgent: bool = False,
        max_bytes: int | None = None,
    ) -> None:
        """Consume ``queue``; decode bodies as ``message_type``; pass batches to ``handler``.

        An ``urgent`` queue (pilots' events and claims) is also served between the batches of
        the others, in the order added: add events before claims, so that a claim never
        overtakes the end of the pilot's previous job.
        """
        limits = [n for n in (max_bytes, self._max_bytes) if n is not None]
        stream = _Stream(queue, message_type, handler, urgent, min(limits, default=None))
        stream.channel = self._connection.channel()
        stream.channel.basic_qos(0, self._batch_size, False)
        consumer = Consumer(stream.channel, queues=[queue], on_message=stream.buffer.append)
        consumer.consume()
        self._streams.append(stream)

    def poll(self, timeout_s: float) -> int:
        """Wait up to ``timeout_s`` for deliveries, then handle every full or pending batch."""
        self._fill(timeout_s)
        handled = 0
        for stream in self._streams:
            flushed = self._flush(stream)
            handled += flushed
            # Only a batch that took time can have kept pilots waiting.
            if flushed and not stream.urgent:
                handled += self._serve_urgent()
        return handled

    def _serve_urgent(self) -> int:
        """Take what has arrived meanwhile, without waiting; handle the urgent queues' part."""
        if not any(s.urgent for s in self._streams):
            return 0
        self._fill(NO_WAIT_S)
        return sum(self._flush(s) for s in self._streams if s.urgent)

    def _fill(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for a first delivery, then gather what follows for at
        most ``GATHER_S``: batches stay large under load, and nothing waits long for one."""
        wait = timeout_s
        gather_until = None
        try:
            while not any(len(s.buffer) >= self._batch_size for s in self._streams):
                self._connection.drain_events(timeout=wait)
                gather_until = gather_until or time.monotonic() + GATHER_S
                if time.monotonic() >= gather_until:
                    return
                wait = 0.001
        except TimeoutError:
            return
        except (*self._connection.connection_errors, OSError) as exc:
            raise BrokerUnavailable(f"lost the message broker while consuming: {exc}") from exc

    def _flush(self, stream: _Stream) -> int:
        if not stream.buffer:
            return 0
        deliveries, stream.buffer[:] = list(stream.buffer), []
        batch, refused = self._decode(stream, deliveries)
        if batch:
            log.debug("batch of %d from %s", len(batch), stream.queue.name)
            _handle(stream.handler, batch)
            self._after_batch()
        failpoints.hit(f"after-commit:{stream.queue.name}")
        requests = [i for i in batch if i.reply_to]
        refused += [(i.delivery, i.refused) for i in batch if i.refused and not i.reply_to]
        answers.send(self._publisher, stream.queue.name, requests, refused)
        refused = [(d, r) for d, r in refused if not answers.reply_address(d)]
        dead_letter(self._publisher, stream.queue.name, [(d.body, r) for d, r in refused])
        self._ack(deliveries)
        return len(deliveries)

    def _decode(
        self, stream: _Stream, deliveries: list[Message]
    ) -> tuple[list[Incoming[Any]], list[tuple[Message, str]]]:
        batch: list[Incoming[Any]] = []
        refused: list[tuple[Message, str]] = []
        for delivery in deliveries:
            try:
                message = _decoded(stream, delivery)
            except SpecError as exc:
                refused.append((delivery, str(exc)))
                continue
            user_id = renames.sender(
                delivery.properties.get("user_id"), delivery.headers, self._own_user
            )
            batch.append(Incoming(message, delivery, user_id=user_id))
        return batch, refused

    def _ack(self, deliveries: list[Message]) -> None:
        if self._amqp:
            deliveries[-1].ack(multiple=True)
            return
        for delivery in deliveries:
            delivery.ack()


def _decoded(stream: _Stream, delivery: Message) -> Any:
    """The delivery's message, checked once here for every queue: its size, its content
    type and encoding, its body against the protocol; long free texts trimmed."""
    answers.check_size(stream.max_bytes, delivery.body)
    _check_content(delivery)
    message, cut = trim(decode_body(stream.message_type, delivery.body))
    for name in cut:
        FIELDS_TRIMMED.labels(queue=stream.queue.name, field=name).inc()
        log.warning("trimmed field %r of a message from %s to its end", name, stream.queue.name)
    return message


#: Content encodings a JSON body may come with (none said: UTF-8 JSON).
ENCODINGS = frozenset({"", "utf-8", "utf8"})


def _check_content(delivery: Message) -> None:
    """Refuse a body that says it is not UTF-8 JSON (a pickle, a compressed body)."""
    content_type = (delivery.content_type or "").partition(";")[0].strip().lower()
    encoding = (delivery.content_encoding or "").strip().lower()
    if content_type not in ("", CONTENT_TYPE):
        raise SpecError(f"content type {content_type!r} refused: messages are {CONTENT_TYPE}")
    if encoding not in ENCODINGS:
        raise SpecError(f"content encoding {encoding!r} refused: messages are UTF-8 JSON")


def _handle(handler: Handler, batch: list[Incoming[Any]]) -> None:
    """Run the handler; if it fails on a batch, find and refuse the message that breaks it.

    The handler's transaction rolled back, so handling the messages again one
    by one is safe. A transaction that lost a conflict with another process's
    is run again at once (``broker.conflicts``). An outage (``RecoverableError``)
    is not the message's fault and goes up to the caller, leaving the batch
    unacked for redelivery.
    """
    try:
        retried(lambda: _run(handler, batch), f"batch of {len(batch)} message(s)")
    except RecoverableError:
        raise
    except Exception as exc:
        if len(batch) > 1:
            for incoming in batch:
                _handle(handler, [incoming])
            return
        log.debug("handler failed on a message", exc_info=True)
        batch[0].refuse(f"the handler failed on this message: {exc!r}")


def _run(handler: Handler, batch: list[Incoming[Any]]) -> None:
    """The handler on ``batch``, which it refuses from scratch (a run again decides anew)."""
    for incoming in batch:
        incoming.refused = None
    handler(batch)
