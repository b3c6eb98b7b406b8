"""The pilot's link to RabbitMQ: connect, declare, and come back after an outage.

Job events leave in the order they were reported, each once RabbitMQ has
confirmed the one before, so an outage can at most send one event twice
(the broker skips an event id it has seen). While RabbitMQ is unreachable
the events wait in memory and the payload keeps running; the link
reconnects with backoff, declares the pilot's queues again (``setup``) and
sends what waited.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from kombu import Connection

from broker.errors import BrokerUnavailable, RecoverableError
from broker.messaging.connection import broker_errors, connect
from broker.messaging.publisher import Outgoing, Publisher, open_publisher
from broker.reconnect import Backoff
from broker.security import identity
from broker.settings import Settings

log = logging.getLogger(__name__)

#: AMQP heartbeat of a pilot's connection, in seconds.
AMQP_HEARTBEAT_S = 60
#: Publishes a pilot keeps unconfirmed at most.
PUBLISH_WINDOW = 16


class Link:
    """A connection that is reopened when lost, and a queue of job events to send on it."""

    def __init__(self, settings: Settings, who: str, setup: Callable[[Connection], None]) -> None:
        self._settings = settings
        self._who = who
        self._setup = setup
        self._backoff = Backoff(who, settings)
        self._connection: Connection | None = None
        self._publisher: Publisher | None = None
        self._events: deque[Outgoing] = deque()
        self._user_id = identity.of(settings)

    @property
    def waiting(self) -> int:
        """Job events not yet confirmed by RabbitMQ."""
        return len(self._events)

    def open(self, stop: threading.Event, give_up: Callable[[], bool] = lambda: False) -> bool:
        """Be connected with no event waiting, waiting out outages; False if stopped first
        (or once ``give_up`` says so)."""
        while not self._try_open():
            if give_up() or not self._backoff.wait(stop):
                return False
        return True

    def lost(self, exc: RecoverableError) -> None:
        """Drop a connection that failed; the next attempt waits for the backoff."""
        if self._connection is not None:
            self._connection.collect()
        self._connection = self._publisher = None
        self._backoff.failed(exc)

    @contextmanager
    def errors(self, doing: str) -> Iterator[Connection]:
        """The open connection; its library errors while ``doing`` something become ours."""
        if self._connection is None:
            raise BrokerUnavailable(f"not connected to the message broker while {doing}")
        with broker_errors(self._connection, doing):
            yield self._connection

    def drain(self, timeout_s: float) -> None:
        """Handle what arrives within ``timeout_s``; ``BrokerUnavailable`` if the link is lost."""
        with self.errors("waiting for messages") as connection:
            try:
                connection.drain_events(timeout=timeout_s)
            except TimeoutError:
                connection.heartbeat_check()

    def publish(self, messages: Iterable[Outgoing]) -> int:
        """Publish now and wait for the confirms (a claim, a dead letter); raises on an outage."""
        if self._publisher is None:
            raise BrokerUnavailable("not connected to the message broker while publishing")
        return self._publisher.publish(messages)

    def send(self, event: Outgoing) -> None:
        """Send a job event after those waiting; if RabbitMQ is down, it waits too."""
        self._events.append(event)
        self._try_open()

    def keep_up(self, timeout_s: float) -> None:
        """While a payload runs: read what arrived, send waiting events, reconnect when due.

        An outage is logged and waited out here, never raised.
        """
        if not self._try_open():
            return
        try:
            self.drain(timeout_s)
        except RecoverableError as exc:
            self.lost(exc)

    def finish(self, stop: threading.Event) -> None:
        """Deliver the events still waiting: wait for RabbitMQ unless ``stop`` is set."""
        if self._events and not self.open(stop):
            log.warning("%s: %d job event(s) not delivered", self._who, len(self._events))

    def close(self) -> None:
        """Close the connection, if there is one; quietly if it has gone already."""
        try:
            with self.errors("closing the connection") as connection:
                connection.release()
        except BrokerUnavailable:
            if self._connection is not None:
                self._connection.collect()
        self._connection = self._publisher = None

    def _try_open(self) -> bool:
        """Connect if the backoff allows, then send waiting events; False after an outage."""
        if self._connection is None and not self._backoff.due():
            return False
        try:
            if self._connection is None:
                self._connect()
            while self._events:
                self.publish([self._events[0]])
                self._events.popleft()
        except RecoverableError as exc:
            self.lost(exc)
            return False
        return True

    def _connect(self) -> None:
        connection = connect(self._settings, heartbeat=AMQP_HEARTBEAT_S)
        self._connection = connection
        with self.errors("declaring the pilot's queues"):
            self._publisher = open_publisher(
                connection, PUBLISH_WINDOW, self._settings.confirm_timeout_s, self._user_id
            )
            self._setup(connection)
        self._backoff.succeeded()
