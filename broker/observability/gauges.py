"""Gauges read from SQL when Prometheus scrapes: jobs, pilots and queue depth per site,
and users' queued and running jobs.

A scrape costs four GROUP BY statements over indexed columns (active jobs
only, never the history), and at most one set per ``metrics_refresh_s``
however many scrapers there are. Users are a label whose values grow with the
users, so only the ``USERS_SHOWN`` with the most queued jobs have their own;
the others are summed under ``OTHER_USERS``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from broker.errors import PandaMQError
from broker.monitor.queries import active_counts, pilots_alive, queue_depth
from broker.store.clock import now
from broker.store.engine import transaction
from broker.store.users import USERS_SHOWN, usage

log = logging.getLogger(__name__)


class SQLGauges(Collector):
    """A Prometheus collector of the jobs, pilots and queues the database knows."""

    def __init__(self, engine: Engine, refresh_s: float, pilot_seen_s: float) -> None:
        self._engine = engine
        self._refresh_s = refresh_s
        self._pilot_seen = timedelta(seconds=pilot_seen_s)
        self._lock = threading.Lock()
        self._read_at = -float("inf")
        self._families: list[GaugeMetricFamily] = []

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The gauges' names, without reading the database (asked at registration)."""
        return iter(described())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The gauges, read again when older than the refresh interval."""
        with self._lock:
            if time.monotonic() - self._read_at >= self._refresh_s:
                self._refresh()
            yield from self._families

    def _refresh(self) -> None:
        try:
            with transaction(self._engine) as conn:
                jobs = active_counts(conn)
                pilots = pilots_alive(conn, now() - self._pilot_seen)
                depth = queue_depth(conn)
                users = user_gauge(usage(conn, limit=None))
        except PandaMQError as exc:
            # The last values stay; the scrape still answers, with process metrics.
            log.warning("metrics: cannot read the database: %s", exc)
            return
        pilot_gauge = {(site,): n for site, n in pilots.items()}
        self._families = _families(jobs, pilot_gauge, depth, users)
        self._read_at = time.monotonic()


def described() -> list[GaugeMetricFamily]:
    """The gauges with their names and help, without values."""
    return _families({}, {}, {}, {})


#: The label value of the users beyond the ``USERS_SHOWN`` with the most queued jobs.
OTHER_USERS = "(others)"


def user_gauge(users: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    """(user, queued|running) → jobs: the first ``USERS_SHOWN`` users (``usage`` lists
    them most queued first) by name, the rest summed as ``OTHER_USERS``."""
    values: dict[tuple[str, str], int] = {}
    for n, u in enumerate(users):
        name = u["user"] if n < USERS_SHOWN else OTHER_USERS
        for use in ("queued", "running"):
            values[(name, use)] = values.get((name, use), 0) + u[use]
    return values


def _families(
    jobs: dict[tuple[str, str], int],
    pilots: dict[tuple[str], int],
    depth: dict[tuple[str, str], int],
    users: dict[tuple[str, str], int],
) -> list[GaugeMetricFamily]:
    return [
        _family("pandamq_jobs", "Jobs not final, per site and state.", ["site", "state"], jobs),
        _family(
            "pandamq_pilots_alive",
            "Pilots per site that claimed recently or hold a job.",
            ["site"],
            pilots,
        ),
        _family(
            "pandamq_queue_depth",
            "Activated jobs waiting for a pilot, per site and resource type.",
            ["site", "resource_type"],
            depth,
        ),
        _family(
            "pandamq_user_jobs",
            "Jobs of each user with the most queued ones: queued (not yet at a pilot) or "
            "running (sent, starting, running).",
            ["user", "use"],
            users,
        ),
    ]


def _family(
    name: str, documentation: str, labels: list[str], values: Mapping[Any, int]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for key, n in sorted(values.items()):
        family.add_metric(list(key), n)
    return family
