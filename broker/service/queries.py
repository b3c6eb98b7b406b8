"""The submitter's API, read side: queries from ``pandamq.queries``, answered in
batches on a connection and a thread of their own, so that a burst of queries
never holds up the claims and events of the broker service's loop.

A batch is read in one transaction per database; each query is authorised by the
identity RabbitMQ validated (``user_id``) and answered on its ``reply_to``. With a
``database_replica_url``, lists and the data catalogue are read on the replica; a
job, its log, a task and a follower's catch-up (``states``) are read on the primary,
since the submitter acts on them at once (a catch-up behind the replica's lag would
miss an ending published meanwhile).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from typing import Any

from sqlalchemy import Engine

from broker import errors, topology
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
from broker.stopping import stop_on_signals
from broker.store.engine import open_engine, transaction

log = logging.getLogger(__name__)


def error_kind(exc: PermanentError | BadInput) -> ErrorKind:
    """How an answer names a refusal: what the client raises for it."""
    if isinstance(exc, NotAllowed):
        return "not_allowed"
    if isinstance(exc, NotFound):
        return "not_found"
    return "bad_input" if isinstance(exc, BadInput) else "failed"


#: The queries a replica may answer: lists and the data catalogue, which may lag.
REPLICA_QUERIES = frozenset({"jobs", "tasks", "errors", "datasets", "dataset"})


def replica_engine(settings: Settings) -> Engine | None:
    """An engine on ``database_replica_url``, if one is set."""
    url = settings.database_replica_url
    return open_engine(url, create=False) if url else None


class QueryHandler:
    """Answers a batch of queries: those a replica may answer from one read transaction
    on it, the others from one on the primary."""

    def __init__(self, engine: Engine, settings: Settings, replica: Engine | None = None) -> None:
        self._engine = engine
        self._replica = replica
        self._settings = settings

    def __call__(self, batch: list[Incoming[Query]]) -> None:
        """Answer each query the sender may ask; refuse the others with the rule."""
        allowed = senders.allowed(batch, "query", lambda i: senders.api_refusal(i.user_id))
        if self._replica is None:
            self._answer(self._engine, allowed)
            return
        lagging = [i for i in allowed if i.message.what in REPLICA_QUERIES]
        self._answer(self._replica, lagging)
        self._answer(self._engine, [i for i in allowed if i.message.what not in REPLICA_QUERIES])

    def _answer(self, engine: Engine, allowed: list[Incoming[Query]]) -> None:
        if not allowed:
            return
        with transaction(engine) as conn:
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

    def __init__(self, settings: Settings, engine: Engine, replica: Engine | None = None) -> None:
        self._settings = settings
        self._engine = engine
        self._replica = replica

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
            consumer = BatchConsumer(
                connection,
                publisher,
                s.batch_size,
                max_bytes=s.max_message_bytes,
                own_user=identity.of(s),
            )
            consumer.add(
                queue,
                Query,
                QueryHandler(self._engine, s, self._replica),
                max_bytes=MAX_QUERY_BYTES,
            )
            backoff.succeeded()
            if ready is not None:
                ready.set()
            while not stop.is_set():
                consumer.poll(s.poll_interval_s)


def run_in_thread(settings: Settings, engine: Engine, stop: threading.Event) -> None:
    """Run the query service in this thread until ``stop`` is set, on ``engine`` and the
    replica, if one is set."""
    replica = replica_engine(settings)
    try:
        QueryService(settings, engine, replica).run(stop)
    finally:
        if replica is not None:
            replica.dispose()


#: How much lower than the broker's the query process's CPU priority is (nice).
QUERY_NICENESS = 10
#: How often a query process looks whether it should stop (its parent gone, or asked).
WATCH_S = 0.5


def run_in_process(settings: Settings, stop: threading.Event) -> None:
    """Run the query service in a process of its own until ``stop`` is set, so that
    answering queries takes nothing from the broker loop's interpreter (one GIL was
    shared by both: 0.45 of the throughput with 50 submitters asking); its error,
    if it ends with one, is raised here."""
    ctx = multiprocessing.get_context("spawn")
    failures: Any = ctx.SimpleQueue()
    process = ctx.Process(
        target=_child,
        args=(settings, failures, os.getpid()),
        name="pandamq-queries",
        daemon=True,
    )
    process.start()
    log.info("query service started in process %d", process.pid)
    while not stop.wait(WATCH_S) and process.is_alive():
        pass
    # SIGTERM, which the child takes as "stop" (no shared lock or event: one the child
    # died holding, or waiting on, would hang the parent).
    process.terminate()
    process.join(timeout=30)
    if not failures.empty():
        name, message = failures.get()
        raise getattr(errors, name, PermanentError)(message)
    if not stop.is_set():
        raise PermanentError(f"the query service's process ended (exit code {process.exitcode})")


def _child(settings: Settings, failures: Any, parent: int) -> None:
    """The query process: serve until SIGTERM (from the parent, or its process group),
    or until the parent is gone."""
    from broker.observability import logs

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it, after Ctrl-C too
    # SIGTERM comes twice when the process group is sent it: from there and the parent.
    stop = stop_on_signals(signal.SIGTERM)
    # Where cores are short, the job flow goes first: a page waits, a pilot does not.
    os.nice(QUERY_NICENESS)
    logs.setup(settings.log_level, settings.log_format)

    # ``parent`` is the pid the parent passed: one that died while this process was
    # starting has left it already, and os.getppid() would name its new parent.
    def watch() -> None:
        while os.getppid() == parent and not stop.wait(WATCH_S):
            pass
        stop.set()

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()
    engine = open_engine(settings.database_url, create=False)
    replica = None
    try:
        replica = replica_engine(settings)
        QueryService(settings, engine, replica).run(stop)
    except errors.PandaMQError as exc:
        failures.put((type(exc).__name__, str(exc)))
    finally:
        engine.dispose()
        if replica is not None:
            replica.dispose()
