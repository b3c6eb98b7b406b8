"""Activated jobs whose dispatch message is gone are dispatched again.

A pilot may purge its own site's job queues: purging needs the read
permission that taking a job needs, and RabbitMQ cannot grant one without
the other. The jobs whose dispatches were in the queue stay ``activated`` in
SQL, with nothing left to bring a pilot to them. This periodic duty (one
broker process at a time, ``broker.duties``) compares each site
queue's depth with the jobs SQL says wait in it, activated longer than
``redispatch_after_s`` ago. A queue that holds fewer messages than that on
two passes in a row (a pilot holding a delivery while it claims it makes a
queue short for a moment, never for a whole period) gets the dispatches of
the jobs that waited through both, through the outbox; counted, and logged
in one line.

A job whose message was still there gets a second one, which is harmless: a
claim on a job no longer ``activated`` is refused (``broker.service.claims``),
and the pilot that holds it skips a job it has run already.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from kombu import Connection
from sqlalchemy import Connection as Sql
from sqlalchemy import Engine, select

from broker import topology
from broker.metrics import REDISPATCHED
from broker.operations.activation import dispatch
from broker.operations.throttle import COLUMNS, Row
from broker.settings import Settings
from broker.states import JobState
from broker.store import outbox
from broker.store.clock import now
from broker.store.engine import transaction
from broker.store.schema import jobs

log = logging.getLogger(__name__)

#: A site's queue, by site and resource type.
QueueKey = tuple[str, str]
#: One attempt of a job.
Attempt = tuple[str, int]
#: How many messages wait in a queue (None: no such queue).
Depth = Callable[[str], int | None]


class Redispatch:
    """Finds site queues short of their activated jobs' dispatches, and fills them again."""

    def __init__(self, engine: Engine, settings: Settings, depth: Depth) -> None:
        self._engine = engine
        self._after = timedelta(seconds=settings.redispatch_after_s)
        self._depth = depth
        #: The waiting jobs of each queue found short on the last pass.
        self._short: dict[QueueKey, set[Attempt]] = {}

    def check(self) -> int:
        """One pass; how many jobs were dispatched again."""
        with transaction(self._engine) as conn:
            waiting = _waiting(conn, now() - self._after)
            again: list[Row] = []
            for key, rows in waiting.items():
                again += self._missing(key, rows)
            outbox.put(conn, [dispatch(r) for r in again])
        self._short = {k: v for k, v in self._short.items() if k in waiting}
        return len(again)

    def _missing(self, key: QueueKey, rows: list[Row]) -> list[Row]:
        """The jobs to dispatch again of one queue: none unless it was short last time too."""
        site, resource = key
        name = topology.job_queue_name(site, resource)
        depth = self._depth(name)
        if depth is None or depth >= len(rows):
            self._short.pop(key, None)
            return []
        attempts = {(r["id"], r["attempt"]) for r in rows}
        before = self._short.pop(key, None)
        if before is None:
            self._short[key] = attempts
            return []
        again = [r for r in rows if (r["id"], r["attempt"]) in before]
        REDISPATCHED.labels(site=site).inc(len(again))
        log.warning(
            "queue %s held %d message(s) for %d job(s) activated over %.0f s ago, twice: "
            "dispatched %d again",
            name,
            depth,
            len(rows),
            self._after.total_seconds(),
            len(again),
        )
        return again


def _waiting(conn: Sql, activated_before: datetime) -> dict[QueueKey, list[Row]]:
    """Jobs ``activated`` since before the given time, by their site's queue."""
    stmt = select(*COLUMNS).where(
        jobs.c.state == JobState.ACTIVATED.value, jobs.c.modified_at < activated_before
    )
    waiting: dict[QueueKey, list[Row]] = {}
    for row in conn.execute(stmt.order_by(jobs.c.priority.desc(), jobs.c.id)).mappings():
        waiting.setdefault((row["site"], row["resource_type"]), []).append(row)
    return waiting


def queue_depth(connection: Connection) -> Depth:
    """A ``Depth`` asking RabbitMQ (or the in-process transport) on a channel of its own,
    opened again after a queue it asked for was missing (the broker closes it then)."""
    held: list[Any] = []

    def depth(name: str) -> int | None:
        if not held:
            held.append(connection.channel())
        try:
            return int(held[0].queue_declare(name, passive=True).message_count)
        except connection.channel_errors:
            held.clear()
            return None

    return depth
