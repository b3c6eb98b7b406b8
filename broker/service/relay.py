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
        self._seen = 0

    def relay_own(self) -> int:
        """:meth:`relay`, if this process has written to the outbox since the last relay.

        What other processes write (the DDM bridge's activations, the CLI's
        kills) waits for the next :meth:`relay`, which the broker service runs
        at least once a second.
        """
        if outbox.last_put() == self._seen:
            return 0
        return self.relay()

    def relay(self) -> int:
        """Publish everything waiting in the outbox; return how many messages."""
        self._seen = outbox.last_put()
        total = 0
        while True:
            with transaction(self._engine) as conn:
                rows = outbox.take(conn, self._batch_size)
                self._publisher.publish(m for _, m in rows)
                outbox.remove(conn, [row_id for row_id, _ in rows])
            total += len(rows)
            if len(rows) < self._batch_size:
                return total
