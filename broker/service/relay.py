"""The outbox relay: publish outbox rows with confirms, then delete them.

A crash after the publish and before the delete publishes those messages
again; every consumer of them (the claim's compare-and-set) is idempotent.
"""

from __future__ import annotations

from sqlalchemy import Engine

from broker.messaging.publisher import Publisher
from broker.store import outbox
from broker.store.engine import transaction


class OutboxRelay:
    """Moves outbox rows to the message broker in confirmed batches."""

    def __init__(self, engine: Engine, publisher: Publisher, batch_size: int) -> None:
        self._engine = engine
        self._publisher = publisher
        self._batch_size = batch_size

    def relay(self) -> int:
        """Publish everything waiting in the outbox; return how many messages."""
        total = 0
        while True:
            with transaction(self._engine) as conn:
                rows = outbox.take(conn, self._batch_size)
                self._publisher.publish(m for _, m in rows)
                outbox.remove(conn, [row_id for row_id, _ in rows])
            total += len(rows)
            if len(rows) < self._batch_size:
                return total
