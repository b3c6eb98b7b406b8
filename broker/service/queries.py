"""The submitter's API, read side: queries from ``pandamq.queries``, answered in
batches on a connection and a thread of their own, so that a burst of queries
never holds up the claims and events of the broker service's loop.

A batch is read in one transaction; each query is authorised by the identity
RabbitMQ validated (``user_id``) and answered on its ``reply_to``.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Engine

from broker import topology
from broker.api import MAX_QUERY_BYTES, Query
from broker.errors import BadInput, NotAllowed, NotFound, PermanentError
from broker.messaging.answers import ErrorKind
from broker.messaging.connection import broker_errors, connect
from broker.messaging.consumer import BatchConsumer, Incoming
from broker.messaging.publisher import open_publisher
from broker.reconnect import Backoff, until_stopped
from broker.security import identity, senders
from broker.service.reading import Asker, Reader
from broker.settings import Settings
from broker.store.engine import transaction

log = logging.getLogger(__name__)


def error_kind(exc: PermanentError | BadInput) -> ErrorKind:
    """How an answer names a refusal: what the client raises for it."""
    if isinstance(exc, NotAllowed):
        return "not_allowed"
    if isinstance(exc, NotFound):
        return "not_found"
    return "bad_input" if isinstance(exc, BadInput) else "failed"


class QueryHandler:
    """Answers a batch of queries from one read transaction."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self._engine = engine
        self._settings = settings

    def __call__(self, batch: list[Incoming[Query]]) -> None:
        """Answer each query the sender may ask; refuse the others with the rule."""
        allowed = senders.allowed(batch, "query", lambda i: senders.api_refusal(i.user_id))
        with transaction(self._engine) as conn:
            reader = Reader(conn, self._settings)
            for incoming in allowed:
                asker = Asker.of(self._settings, str(incoming.user_id))
                try:
                    data, cursor = reader.read(incoming.message, asker)
                except (BadInput, PermanentError) as exc:
                    incoming.refuse(str(exc), error_kind(exc))
                    continue
                incoming.reply(data, cursor)


class QueryService:
    """Consumes ``pandamq.queries`` until stopped, waiting out outages."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self._settings = settings
        self._engine = engine

    def run(self, stop: threading.Event, ready: threading.Event | None = None) -> None:
        """Serve until ``stop`` is set."""
        backoff = Backoff("query service", self._settings)
        until_stopped(lambda: self._serve(stop, ready, backoff), backoff, stop)
        log.info("query service stopped")

    def _serve(
        self, stop: threading.Event, ready: threading.Event | None, backoff: Backoff
    ) -> None:
        s = self._settings
        with connect(s, heartbeat=0) as connection, broker_errors(connection, "answering queries"):
            queue = topology.Topology(s.queue_type).queries_queue()
            topology.declare(connection.default_channel, [queue])
            publisher = open_publisher(
                connection, s.publish_window, s.confirm_timeout_s, identity.of(s)
            )
            consumer = BatchConsumer(connection, publisher, s.batch_size)
            consumer.add(queue, Query, QueryHandler(self._engine, s), max_bytes=MAX_QUERY_BYTES)
            backoff.succeeded()
            if ready is not None:
                ready.set()
            while not stop.is_set():
                consumer.poll(s.poll_interval_s)
