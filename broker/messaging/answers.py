"""Answers to requests: a message that carries ``reply_to`` gets an ``Answer``
there once its batch is committed, instead of being dead-lettered when refused.

Answers are neither persistent nor mandatory: an asker that has gone away
(its direct reply-to consumer closed) costs the service one dropped message.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from broker.api import Answer
from broker.errors import SpecError
from broker.messaging.publisher import Outgoing, Publisher
from broker.metrics import REQUESTS
from broker.protocol import encode

if TYPE_CHECKING:
    from kombu import Message

    from broker.messaging.consumer import Incoming

log = logging.getLogger(__name__)

ErrorKind = Literal["bad_input", "not_found", "not_allowed", "failed"]


@dataclass(frozen=True)
class Reply:
    """What a handler answers a request with."""

    data: Any = None
    cursor: str = ""


def reply_address(delivery: Message) -> str | None:
    """Where the sender of ``delivery`` waits for its answer, if it does."""
    return delivery.properties.get("reply_to") or None


def check_size(max_bytes: int | None, body: bytes | str) -> None:
    """Refuse a body longer than ``max_bytes`` before reading it."""
    if max_bytes is not None and len(body) > max_bytes:
        raise SpecError(f"message of {len(body)} bytes refused unread: at most {max_bytes}")


def send(
    publisher: Publisher,
    queue: str,
    requests: Sequence[Incoming[Any]],
    undecoded: Sequence[tuple[Message, str]],
) -> None:
    """Answer every request of a handled batch, and every request that did not decode."""
    out = [_answer(i.delivery, _of(queue, i)) for i in requests]
    for delivery, reason in undecoded:
        if reply_address(delivery):
            out.append(_answer(delivery, _refusal(queue, reason, "bad_input")))
    if out:
        publisher.publish(out)


def _of(queue: str, incoming: Incoming[Any]) -> Answer:
    if incoming.refused is not None:
        return _refusal(queue, incoming.refused, incoming.refused_as)
    REQUESTS.labels(queue=queue, outcome="answered").inc()
    reply = incoming.answer or Reply()
    return Answer(True, data=reply.data, cursor=reply.cursor)


def _refusal(queue: str, reason: str, kind: ErrorKind) -> Answer:
    REQUESTS.labels(queue=queue, outcome=kind).inc()
    log.info("refused a request from %s: %s", queue, reason)
    return Answer(False, error=reason, error_kind=kind)


def _answer(delivery: Message, answer: Answer) -> Outgoing:
    return Outgoing(
        "",
        str(reply_address(delivery)),
        encode(answer),
        persistent=False,
        mandatory=False,
        correlation_id=delivery.properties.get("correlation_id"),
    )
