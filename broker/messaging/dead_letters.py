"""Dead-lettering: a refused message goes to ``pandamq.service.dead`` with the reason,
is counted, and is logged in one line."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from broker import topology
from broker.messaging.publisher import Outgoing, Publisher
from broker.metrics import DEAD_LETTERED

log = logging.getLogger(__name__)

#: Header naming the queue a dead-lettered message was taken from.
QUEUE_HEADER = "x-pandamq-queue"


def dead_letter(publisher: Publisher, queue: str, refused: Sequence[tuple[Any, str]]) -> None:
    """Publish each (body, reason) taken from ``queue`` to the dead-letter exchange."""
    if not refused:
        return
    for _, reason in refused:
        log.warning("dead-lettered a message from %s: %s", queue, reason)
        DEAD_LETTERED.labels(queue=queue).inc()
    publisher.publish(
        Outgoing(
            topology.DEAD_LETTER_EXCHANGE,
            queue,
            _raw(body),
            headers={topology.REASON_HEADER: reason, QUEUE_HEADER: queue},
        )
        for body, reason in refused
    )


def _raw(body: Any) -> bytes:
    return body if isinstance(body, bytes) else str(body).encode()
