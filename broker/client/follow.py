"""Following endings: a private queue bound to the endings exchange before the
catch-up query, so that an ending is either in the query's answer or in the
queue, never in neither.

The queue is server-named, exclusive and goes with its connection; after an outage the
follower binds a new one and asks again (``Client.watch``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from kombu import Connection, Consumer, Message

from broker import topology
from broker.api import JobEnding, TaskEnding
from broker.errors import BrokerRefused
from broker.messaging.connection import broker_errors
from broker.protocol import decode

Ending = JobEnding | TaskEnding


class Follower:
    """Endings routed to the keys it binds, kept until taken."""

    def __init__(self, connection: Connection, keys: Iterable[str]):
        self._connection = connection
        self._pending: list[Ending] = []
        # Server-named and exclusive: of no queue type, and nobody else's to read.
        queue = topology.Topology().follow_queue(sorted(set(keys)))
        try:
            with broker_errors(connection, "binding a queue to the endings exchange"):
                self._consumer = Consumer(
                    connection.channel(), [queue], on_message=self._on_ending, no_ack=True
                )
                self._consumer.consume()
        except BrokerRefused as exc:
            raise _explained(exc) from exc.__cause__

    def _on_ending(self, message: Message) -> None:
        data = json.loads(message.body)
        is_job = isinstance(data, dict) and "job_id" in data
        self._pending.append(decode(JobEnding, data) if is_job else decode(TaskEnding, data))

    def take(self) -> list[Ending]:
        """The endings received since the last call."""
        taken, self._pending = self._pending, []
        return taken

    def close(self) -> None:
        """Stop consuming; the queue goes with the channel."""
        self._consumer.cancel()


def _explained(exc: BrokerRefused) -> BrokerRefused:
    """A missing endings exchange means no broker service has run on this vhost yet."""
    if "no exchange" not in str(exc):
        return exc
    return BrokerRefused(
        f"{exc}: the broker service declares it when it starts; "
        "is `pandamq serve` running on this vhost?"
    )


def owner_keys(owner: str) -> list[str]:
    """Binding keys for every ending of ``owner``'s jobs and tasks."""
    return [f"{owner}.#"]


def task_keys(owner: str | None, task_id: str) -> list[str]:
    """Binding keys for a task's ending and its jobs' endings (both: the in-process
    transport's ``#`` does not match zero words, as RabbitMQ's does)."""
    key = topology.task_ending_key(owner, task_id)
    return [key, f"{key}.#"]
