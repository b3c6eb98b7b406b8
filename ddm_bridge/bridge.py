"""The DDM bridge service: subscribes sites to the inputs of their assigned jobs,
turns the DDM's reports into activations and failures, times out subscriptions
that stopped moving, registers the outputs of holding jobs and moves them on
(PanDA's Adder: ``ddm_bridge.adder``), and closes the output datasets of
finished tasks.

Any number of bridges per database: each serves the subscriptions it holds
(``ddm_bridge.holding``), so that one bridge copies each; the subscriptions
of a bridge that died are taken by another once its hold ran out
(``lease_s``), and a bridge that stops lets go of its own at once; the
outputs reported by pilots are shared the same way. Linking
jobs to new dispatch datasets and closing datasets are duties that one
bridge at a time does (``broker.duties``).
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine

from broker.conflicts import retried
from broker.duties import Duties
from broker.error_codes import DDMError
from broker.errors import RecoverableError
from broker.metrics import SUBSCRIPTIONS_ENDED
from broker.observability import pipeline
from broker.operations import retries
from broker.operations.throttle import Limits
from broker.reconnect import Backoff, until_stopped
from broker.settings import Settings
from broker.store import datasets, subscriptions
from broker.store.clock import now
from broker.store.engine import transaction
from broker.store.migrate import require_current
from ddm_bridge import callbacks, closing, dispatch, holding
from ddm_bridge.adder import Adder
from ddm_bridge.backend import DDMBackend, Report
from ddm_bridge.backends import open_backend

log = logging.getLogger(__name__)

#: The bridges' duties: linking waiting jobs to new dispatch datasets, closing datasets.
DISPATCH, CLOSING = "ddm-dispatch", "ddm-closing"


class DDMBridge:
    """Runs the bridge; ``step`` is one pass, for the loop and for tests."""

    def __init__(
        self, settings: Settings, engine: Engine, backend: DDMBackend | None = None
    ) -> None:
        pipeline.install()
        self._settings = settings
        self._limits = Limits.of(settings)
        self._engine = engine
        self.backend: DDMBackend = backend or open_backend(settings, engine)
        #: Reports taken from the backend and not yet committed (kept across an outage).
        self._pending: list[Report] = []
        #: Subscriptions in progress that this bridge gave to the backend.
        self._asked: set[tuple[str, str]] = set()
        self._duties = Duties(engine, settings, "ddm")
        self._adder = Adder(settings, engine, self.backend, self._duties.holder)
        #: The schema was found current: there may be holds to let go of at the end.
        self._ran = False

    def run(self, stop: threading.Event, ready: threading.Event | None = None) -> None:
        """Serve until ``stop`` is set, waiting out database outages."""
        backoff = Backoff("ddm bridge", self._settings)
        try:
            until_stopped(lambda: self._run(stop, ready, backoff), backoff, stop)
        finally:
            self.backend.stop()
            self._let_go_if_up()
        log.info("ddm bridge stopped")

    def _let_go_if_up(self) -> None:
        if not self._ran:  # never served (a database without the schema): nothing held
            return
        try:
            self.let_go()
        except RecoverableError as exc:
            log.warning("ddm bridge: could not let go of its subscriptions: %s", exc)

    def _run(self, stop: threading.Event, ready: threading.Event | None, backoff: Backoff) -> None:
        require_current(self._engine)
        self._ran = True
        self.resume()
        backoff.succeeded()
        log.info("ddm bridge ready")
        if ready is not None:
            ready.set()
        while not stop.is_set():
            if not retried(self.step, "ddm bridge pass"):
                stop.wait(self._settings.ddm_poll_interval_s)

    def resume(self) -> None:
        """Ask the backend again for every subscription this bridge serves (after an outage)."""
        self._asked = set()

    def step(self, at: datetime | None = None) -> int:
        """One pass; how many things changed (jobs, subscriptions, datasets)."""
        t = at or now()
        changed = self._duties.turn(DISPATCH, 0.0, lambda: self._dispatch(t))
        # (outside the transaction: a backend may use the database itself)
        changed += self._ask(self._serve(t)) + self._apply_reports(t) + self._adder.step(t)
        return changed + self._time_out(t) + self._duties.turn(CLOSING, 0.0, self._close)

    def _dispatch(self, t: datetime) -> int:
        """Link waiting jobs to dispatch datasets; the jobs activated and subscriptions made."""
        with transaction(self._engine) as conn:
            activated, new = dispatch.subscribe_waiting(conn, t, self._limits)
        return activated + len(new)

    def _serve(self, t: datetime) -> list[tuple[str, str]]:
        """Keep the subscriptions this bridge holds, and take those no bridge holds (also
        those the broker made: outputs shipped to their destination); every one it serves.
        Those it held and lost (it was cut off longer than its hold) it stops copying."""
        hold = timedelta(seconds=self._settings.lease_s)
        with transaction(self._engine) as conn:
            served = holding.serve(conn, self._duties.holder, t, t + hold, t + hold / 2)
        for dataset, site in self._asked - set(served):
            log.warning("subscription of %s to %s is served by another bridge now", dataset, site)
            self.backend.cancel(dataset, site)
            self._asked.discard((dataset, site))
        return served

    def let_go(self) -> None:
        """Leave the subscriptions this bridge serves to the other bridges (it stops)."""
        with transaction(self._engine) as conn:
            holding.let_go(conn, self._duties.holder)
        self._duties.let_go()

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
            stalled = subscriptions.stalled(
                conn, t - timedelta(seconds=timeout), self._duties.holder
            )
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
