"""The periodic work of a service process, shared with every other process of the
deployment: each duty runs in one process at a time, once per period.

Before a pass, the process takes the duty's lease (``broker.store.leases``) for
``lease_s``; after it, it gives the lease back until the next period. A
process that finds the lease taken skips the pass, so no process waits for
another's. A process that dies during a pass leaves the lease to run out:
another one takes the duty at most ``lease_s`` later. Processes try more
often than the period (``attempts_every``), so that whichever is free first
runs the next turn.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import Engine

from broker.errors import PandaMQError
from broker.metrics import DUTY_RUNS
from broker.settings import Settings
from broker.store import leases
from broker.store.clock import now
from broker.store.engine import transaction

log = logging.getLogger(__name__)

#: How many times per period each process tries to take a duty.
ATTEMPTS_PER_PERIOD = 4


def holder_name(service: str) -> str:
    """A name for this process's service, unique in the deployment (host, pid, service)."""
    return f"{socket.gethostname()}:{os.getpid()}:{service}:{uuid.uuid4().hex[:6]}"


def attempts_every(interval_s: float) -> float:
    """How often a process tries to take a duty that runs every ``interval_s``."""
    return interval_s / ATTEMPTS_PER_PERIOD


class Duties:
    """The leases of one service process (``holder``) over its periodic duties."""

    def __init__(self, engine: Engine, settings: Settings, service: str) -> None:
        self._engine = engine
        self._lease = timedelta(seconds=settings.lease_s)
        self.holder = holder_name(service)

    def turn(self, duty: str, interval_s: float, run: Callable[[], int]) -> int:
        """Run ``run`` if this process takes the duty's turn (its last run ended
        ``interval_s`` ago, or its holder died); what it handled (0 if not taken)."""
        t = now()
        with transaction(self._engine) as conn:
            if not leases.take(conn, duty, self.holder, t, t + self._lease, period_s=interval_s):
                return 0
        DUTY_RUNS.labels(duty=duty).inc()
        try:
            handled = run()
        except BaseException:
            self._free(duty)
            raise
        ended = now()
        with transaction(self._engine) as conn:
            leases.give_back(conn, duty, self.holder, ended, ended + timedelta(seconds=interval_s))
        return handled

    def _free(self, duty: str) -> None:
        """A pass that failed: the duty is free at once, for the next try of any process;
        if the database cannot be reached, the lease runs out by itself."""
        try:
            t = now()
            with transaction(self._engine) as conn:
                leases.give_back(conn, duty, self.holder, t, t)
        except PandaMQError as exc:
            log.info("duty %s left to its lease's end: %s", duty, exc)

    def hold(self, name: str, ttl_s: float | None = None) -> bool:
        """Take or keep the lease ``name`` (a partition this process serves, such as a
        factory's site) for ``ttl_s`` (default ``lease_s``); whether it holds it."""
        t = now()
        ttl = self._lease if ttl_s is None else timedelta(seconds=ttl_s)
        with transaction(self._engine) as conn:
            return leases.take(conn, name, self.holder, t, t + ttl, renew=True)

    def let_go(self) -> None:
        """Free every lease this process holds (it stops): others take them at once. A
        database that cannot be reached leaves them to run out."""
        try:
            with transaction(self._engine) as conn:
                leases.let_go(conn, self.holder, now())
        except PandaMQError as exc:
            log.info("leases of %s left to run out: %s", self.holder, exc)
