"""The broker service's loop: consume submissions, claims and events in batches,
relay the outbox, wait out outages of RabbitMQ or the database, stop cleanly
when asked."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from kombu import Connection
from sqlalchemy import Engine

from broker import topology
from broker.conflicts import retried
from broker.duties import Duties, attempts_every
from broker.messaging import renames
from broker.messaging.connection import broker_errors, connect, is_memory
from broker.messaging.consumer import BatchConsumer
from broker.messaging.publisher import Publisher, open_publisher
from broker.observability import pipeline
from broker.operations.fairshare import UserPriorities
from broker.protocol import ClaimRequest, JobCommand, JobEvent, JobSpec, TaskSpec
from broker.reconnect import Backoff, until_stopped
from broker.security import identity
from broker.service.claims import ClaimHandler
from broker.service.commands import CommandHandler
from broker.service.events import EventHandler
from broker.service.queries import run_in_process, run_in_thread
from broker.service.rebrokerage import Rebrokerage
from broker.service.redispatch import Redispatch, queue_depth
from broker.service.relay import OutboxRelay
from broker.service.submission import SubmissionHandler
from broker.service.tasks import TaskHandler
from broker.service.watchdog import Watchdog
from broker.settings import Settings
from broker.store import statistics
from broker.store.engine import transaction
from broker.store.migrate import require_current
from broker.store.sites import list_sites

log = logging.getLogger(__name__)

#: Even when no handler wrote to the outbox, look at it this often (rows left
#: by a crash, or written by another process).
OUTBOX_SWEEP_S = 1.0


class _Every:
    """A periodic pass of the loop: run at most once every ``interval_s``."""

    def __init__(self, interval_s: float, run: Callable[[], int]) -> None:
        self._interval_s = interval_s
        self._run = run
        self._last = time.monotonic()

    def run_if_due(self) -> int:
        """Run the pass if it is due; what it handled (0 if it did not run)."""
        if time.monotonic() - self._last <= self._interval_s:
            return 0
        try:
            return self._run()
        finally:
            self._last = time.monotonic()


class BrokerService:
    """One broker process. Several may run side by side on the same database."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        pipeline.install()
        self._settings = settings
        self._engine = engine
        self._topology = topology.Topology(settings.queue_type)
        self._declared_sites: set[str] = set()
        self._connection: Connection | None = None

    def run(self, stop: threading.Event, ready: threading.Event | None = None) -> None:
        """Serve until ``stop`` is set, reconnecting after outages of RabbitMQ or the database.

        The submitter's queries are answered by a thread of this service's own
        (``QueryService``); it stops with the service.
        """
        failed: list[BaseException] = []

        def answer_queries() -> None:
            try:
                if self._settings.query_process and not is_memory(self._settings.broker_url):
                    run_in_process(self._settings, stop)
                else:
                    run_in_thread(self._settings, self._engine, stop)
            except BaseException as exc:  # raised again by run(), in the caller's thread
                failed.append(exc)
                stop.set()

        queries = threading.Thread(target=answer_queries, name="queries")
        queries.start()
        backoff = Backoff("broker service", self._settings)
        try:
            until_stopped(lambda: self._serve(stop, ready, backoff), backoff, stop)
        finally:
            stop.set()
            queries.join()
        if failed:
            raise failed[0]
        log.info("broker service stopped")

    def _serve(
        self, stop: threading.Event, ready: threading.Event | None, backoff: Backoff
    ) -> None:
        """One connection's life: declare, consume, relay; an outage ends it.

        Deliveries not acked when it ends (a batch whose transaction failed)
        go back to their queues when the connection closes, and come again.
        """
        s = self._settings
        with connect(s, heartbeat=0) as connection, broker_errors(connection, "serving"):
            require_current(self._engine)
            self._connection = connection
            self._declared_sites = set()
            publisher = open_publisher(
                connection, s.publish_window, s.confirm_timeout_s, identity.of(s)
            )
            self._declare(connection)
            relay = OutboxRelay(self._engine, publisher, s.batch_size)
            consumer = self._consumer(connection, publisher, relay)
            relay.relay()
            after_outage = backoff.failures > 0
            backoff.succeeded()
            log.info("broker service ready on %s", connection.as_uri())
            if ready is not None:
                ready.set()
            self._loop(
                stop,
                consumer,
                relay,
                Redispatch(self._engine, s, queue_depth(connection)),
                after_outage,
            )

    def _declare(self, connection: Connection) -> None:
        topology.declare(
            connection.default_channel,
            self._topology.service_queues(),
            exchanges=[
                self._topology.jobs_exchange(),
                self._topology.control_exchange(),
                self._topology.replies_exchange(),
                self._topology.endings_exchange(),
            ],
        )
        renames.move_old_queues(connection, self._topology, identity.of(self._settings))
        self._declare_sites()

    def site_queues_ready(self, sites: set[str]) -> None:
        """Declare the job queues of sites not declared yet by this process."""
        new = sites - self._declared_sites
        if new and self._connection is not None:
            topology.declare(self._connection.default_channel, self._topology.site_queues(new))
            self._declared_sites |= new

    def _consumer(
        self, connection: Connection, publisher: Publisher, relay: OutboxRelay
    ) -> BatchConsumer:
        # What a batch wrote to the outbox leaves at once, not after the other queues' batches.
        s = self._settings
        consumer = BatchConsumer(
            connection,
            publisher,
            s.batch_size,
            relay.relay_own,
            s.max_message_bytes,
            own_user=identity.of(s),
        )
        # Pilots first, events before claims: a site's queue is capped by its running jobs.
        consumer.add(
            self._topology.events_queue(),
            JobEvent,
            EventHandler(self._engine, self._settings),
            urgent=True,
        )
        consumer.add(
            self._topology.claims_queue(),
            ClaimRequest,
            ClaimHandler(self._engine, publisher, self._settings),
            urgent=True,
        )
        consumer.add(
            self._topology.submit_queue(),
            JobSpec,
            SubmissionHandler(self._engine, self.site_queues_ready, self._settings),
        )
        consumer.add(
            self._topology.commands_queue(),
            JobCommand,
            CommandHandler(self._engine, self._settings),
        )
        consumer.add(
            self._topology.tasks_queue(),
            TaskSpec,
            TaskHandler(self._engine, self._settings, self.site_queues_ready),
        )
        return consumer

    def _loop(
        self,
        stop: threading.Event,
        consumer: BatchConsumer,
        relay: OutboxRelay,
        redispatch: Redispatch,
        after_outage: bool = False,
    ) -> None:
        watchdog = Watchdog(self._engine, self._settings)
        if after_outage:
            # Pilots were cut off too, and reconnect on their own backoff.
            watchdog.after_outage()
        rebrokerage = Rebrokerage(self._engine, self._settings)
        priorities = UserPriorities(self._engine, self._settings)
        s = self._settings
        duties = Duties(self._engine, s, "broker")
        passes = [
            self._duty(duties, "watchdog", s.watchdog_interval_s, watchdog.check),
            self._duty(duties, "user-priorities", s.brokerage_interval_s, priorities.check),
            self._duty(duties, "rebrokerage", s.brokerage_interval_s, rebrokerage.check),
            self._duty(duties, "redispatch", s.watchdog_interval_s, redispatch.check),
            # Every process declares the queues of new sites on its own channel.
            _Every(s.brokerage_interval_s, self._declare_sites),
        ]
        if s.statistics_interval_s > 0:
            passes.append(
                self._duty(duties, "statistics", s.statistics_interval_s, self._refresh_statistics)
            )
        sweep = _Every(OUTBOX_SWEEP_S, relay.relay)
        while not stop.is_set():
            handled = consumer.poll(s.poll_interval_s)
            handled += sum(p.run_if_due() for p in passes)
            # Another process's outbox rows (the DDM bridge's) go out within a sweep.
            if not sweep.run_if_due() and handled:
                relay.relay_own()

    @staticmethod
    def _duty(duties: Duties, duty: str, interval_s: float, run: Callable[[], int]) -> _Every:
        """A periodic pass that one broker process of all runs each period."""
        what = f"{duty} pass"
        return _Every(
            attempts_every(interval_s),
            lambda: duties.turn(duty, interval_s, lambda: retried(run, what)),
        )

    def _refresh_statistics(self) -> int:
        """Analyse the hot tables that grew; it handles no message, so it counts 0."""
        statistics.refresh(self._engine)
        return 0

    def _declare_sites(self) -> int:
        """Declare the job queues of every site in the catalogue (new ones since last time)."""
        with transaction(self._engine) as conn:
            self.site_queues_ready({site["name"] for site in list_sites(conn)})
        return 0
