"""The DDM bridge service: subscribes sites to the inputs of their assigned jobs,
turns the DDM's reports into activations and failures, times out subscriptions
that stopped moving, and closes the output datasets of finished tasks.

One bridge per database: it holds the local DDM's transfers in memory, and
resumes every subscription still in progress when it starts.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine

from broker.conflicts import retried
from broker.error_codes import DDMError
from broker.metrics import SUBSCRIPTIONS_ENDED
from broker.reconnect import Backoff, until_stopped
from broker.service import retries
from broker.service.throttle import Limits
from broker.settings import Settings
from broker.store import datasets, subscriptions
from broker.store.clock import now
from broker.store.engine import transaction
from broker.store.migrate import require_current
from ddm_bridge import callbacks, closing, dispatch
from ddm_bridge.backend import DDMBackend, Report
from ddm_bridge.backends.local import LocalDDM

log = logging.getLogger(__name__)


class DDMBridge:
    """Runs the bridge; ``step`` is one pass, for the loop and for tests."""

    def __init__(
        self, settings: Settings, engine: Engine, backend: DDMBackend | None = None
    ) -> None:
        self._settings = settings
        self._limits = Limits.of(settings)
        self._engine = engine
        self.backend: DDMBackend = backend or LocalDDM(settings, engine)
        #: Reports taken from the backend and not yet committed (kept across an outage).
        self._pending: list[Report] = []
        #: Subscriptions in progress that this bridge gave to the backend.
        self._asked: set[tuple[str, str]] = set()

    def run(self, stop: threading.Event, ready: threading.Event | None = None) -> None:
        """Serve until ``stop`` is set, waiting out database outages."""
        backoff = Backoff("ddm bridge", self._settings)
        try:
            until_stopped(lambda: self._serve(stop, ready, backoff), backoff, stop)
        finally:
            self.backend.stop()
        log.info("ddm bridge stopped")

    def _serve(
        self, stop: threading.Event, ready: threading.Event | None, backoff: Backoff
    ) -> None:
        require_current(self._engine)
        self.resume()
        backoff.succeeded()
        log.info("ddm bridge ready")
        if ready is not None:
            ready.set()
        while not stop.is_set():
            if not retried(self.step, "ddm bridge pass"):
                stop.wait(self._settings.ddm_poll_interval_s)

    def resume(self) -> None:
        """Ask the backend again for every subscription in progress (after a restart)."""
        self._asked = set()
        with transaction(self._engine) as conn:
            active = subscriptions.active(conn)
        self._ask(active)

    def step(self, at: datetime | None = None) -> int:
        """One pass; how many things changed (jobs, subscriptions, datasets)."""
        t = at or now()
        with transaction(self._engine) as conn:
            activated, new = dispatch.subscribe_waiting(conn, t, self._limits)
            # also those the broker made (outputs shipped to their destination)
            requested = subscriptions.active(conn, subscriptions.REQUESTED)
        # (outside the transaction: a backend may use the database itself)
        changed = activated + len(new) + self._ask(requested) + self._apply_reports(t)
        return changed + self._time_out(t) + self._close()

    def _ask(self, wanted: list[tuple[str, str]]) -> int:
        """Give the backend the subscriptions it has not been given; how many."""
        new = [key for key in wanted if key not in self._asked]
        for dataset, site in new:
            self.backend.subscribe(dataset, site)
            self._asked.add((dataset, site))
        return len(new)

    def _apply_reports(self, t: datetime) -> int:
        self._pending += self.backend.reports()
        if not self._pending:
            return 0
        with transaction(self._engine) as conn:
            for report in self._pending:
                self._apply(conn, report, t)
            subscriptions.count_placed(
                conn, ((r.dataset, r.site) for r in self._pending if r.placed)
            )
        handled = len(self._pending)
        self._pending = []
        return handled

    def _apply(self, conn: Connection, report: Report, t: datetime) -> None:
        """Record one report; a subscription that ended acts on its jobs."""
        found = datasets.files_by_did(conn, (did for did, _ in report.placed))
        paths = {found[did][0]: path for did, path in report.placed if did in found}
        if paths:
            datasets.add_replicas(conn, report.site, paths, t)
        moved = subscriptions.progress(
            conn,
            report.dataset,
            report.site,
            report.state,
            t,
            retries=report.retries,
            error=report.error,
        )
        if moved and report.state != subscriptions.TRANSFERRING:
            SUBSCRIPTIONS_ENDED.labels(state=report.state).inc()
            self._asked.discard((report.dataset, report.site))
        if moved and report.state == subscriptions.DONE:
            callbacks.completed(conn, report.dataset, t, self._limits)
        elif moved and report.state == subscriptions.FAILED:
            callbacks.failed(
                conn,
                report.dataset,
                DDMError.SUBSCRIPTION_FAILED,
                report.error or "the DDM gave no reason",
                retries.Policy.of(self._settings),
                t,
                self._limits,
            )

    def _time_out(self, t: datetime) -> int:
        """Fail subscriptions that made no progress within ``subscription_timeout_s``."""
        timeout = self._settings.subscription_timeout_s
        with transaction(self._engine) as conn:
            stalled = subscriptions.stalled(conn, t - timedelta(seconds=timeout))
            for dataset, site in stalled:
                error = f"no progress for {timeout:.0f} s"
                if subscriptions.progress(
                    conn, dataset, site, subscriptions.FAILED, t, error=error
                ):
                    callbacks.failed(
                        conn,
                        dataset,
                        DDMError.SUBSCRIPTION_TIMEOUT,
                        error,
                        retries.Policy.of(self._settings),
                        t,
                        self._limits,
                    )
        for dataset, site in stalled:
            self.backend.cancel(dataset, site)
            self._asked.discard((dataset, site))
        return len(stalled)

    def _close(self) -> int:
        with transaction(self._engine) as conn:
            names = closing.closable(conn)
        for name in names:
            self.backend.close(name)
            log.info("closed dataset %s: every job that writes to it is final", name)
        return len(names)
