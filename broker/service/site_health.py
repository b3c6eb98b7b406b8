"""The automatic rule on site statuses, applied periodically by the broker service:
failing sites go to ``test``, probed sites back ``online`` (``broker.brokerage.health``).

Safe with several broker processes: each change is a compare-and-set on the status
(and the probes' start) the pass read, so a change is made and counted once.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine

from broker.brokerage.exclusion import AUTOMATIC
from broker.brokerage.health import HealthPolicy, SiteHealth, Verdict, judge
from broker.metrics import SITE_STATUS_CHANGES
from broker.settings import Settings
from broker.store.clock import as_utc, now
from broker.store.engine import transaction
from broker.store.site_status import (
    StatusChange,
    change_status,
    idle_jobs,
    outcomes_since,
    statuses,
    stuck_jobs,
)

log = logging.getLogger(__name__)


def health_policy(settings: Settings) -> HealthPolicy:
    """The automatic rule's thresholds from the settings."""
    return HealthPolicy(
        min_failures=settings.site_test_min_failures,
        idle_s=settings.rebrokerage_idle_s,
        start_timeout_s=settings.site_start_timeout_s,
        probe_jobs=settings.site_probe_jobs,
        probe_interval_s=settings.site_probe_interval_s,
    )


class SiteHealthCheck:
    """One pass: judge every site, change the statuses the rule says."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self._engine = engine
        self._settings = settings
        self._policy = health_policy(settings)

    def check(self, at: datetime | None = None) -> int:
        """One pass; how many site statuses changed."""
        t = at or now()
        with transaction(self._engine) as conn:
            judged = self._judged(conn, t)
        changed = 0
        for change in judged:
            # One short transaction per site: it never holds two sites' rows, which
            # activation locks one by one.
            with transaction(self._engine) as conn:
                made = change_status(conn, change, t)
            if made:
                _changed(change)
                changed += 1
        return changed

    def _judged(self, conn: Connection, t: datetime) -> list[StatusChange]:
        window = t - timedelta(seconds=self._settings.site_test_window_s)
        idle_since = t - timedelta(seconds=self._policy.idle_s)
        stuck_since = t - timedelta(seconds=self._policy.start_timeout_s)
        outcomes = outcomes_since(conn, window)
        idle, stuck = idle_jobs(conn, idle_since), stuck_jobs(conn, stuck_since)
        changes = []
        for row in statuses(conn):
            name = row["name"]
            # Idle and stuck jobs count once the site has had its status that long.
            since = row["status_at"]
            settled = since is None or as_utc(since) <= min(idle_since, stuck_since)
            failed, finished = outcomes.get(name, (0, 0))
            health = SiteHealth(
                name,
                row["status"],
                row["status_by"],
                failed,
                finished,
                idle.get(name, 0) if settled else 0,
                stuck.get(name, 0) if settled else 0,
            )
            verdict = judge(health, self._policy, t)
            if verdict is not None:
                changes.append(_change(row, verdict))
        return changes


def _change(row: dict[str, Any], verdict: Verdict) -> StatusChange:
    return StatusChange(
        str(row["name"]),
        str(row["status"]),
        verdict.status,
        AUTOMATIC,
        verdict.reason,
        verdict.probe_at,
        row["probe_at"],
    )


def _changed(change: StatusChange) -> None:
    SITE_STATUS_CHANGES.labels(change.site, change.before, change.status).inc()
    log.warning(
        "site %s: %s -> %s (automatic: %s)",
        change.site,
        change.before,
        change.status,
        change.reason,
    )
