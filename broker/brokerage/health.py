"""The automatic rule on site statuses: a failing site goes to ``test``, and back
``online`` when its probe jobs finish.

Pure: ``judge`` takes what the broker service counted in SQL for one site and
says what its status becomes. Only ``online`` sites and sites this rule put in
``test`` are judged: a status an operator set stays as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from broker.brokerage.exclusion import AUTOMATIC, when


@dataclass(frozen=True)
class HealthPolicy:
    """The thresholds of the automatic rule (settings of the same names, docs/brokerage.md)."""

    min_failures: int = 10
    idle_s: float = 3600.0
    start_timeout_s: float = 900.0
    probe_jobs: int = 2
    probe_interval_s: float = 600.0


@dataclass(frozen=True)
class SiteHealth:
    """One site as the rule sees it.

    ``failed`` and ``finished`` count its attempts ended since it was last judged
    (the window, its last status change, or, in ``test``, its probes' start);
    ``idle`` its jobs activated for longer than ``idle_s`` while no pilot claimed;
    ``stuck`` its jobs sent to a pilot longer than ``start_timeout_s`` ago while none
    of its jobs started since.
    """

    name: str
    status: str
    status_by: str | None = None
    failed: int = 0
    finished: int = 0
    idle: int = 0
    stuck: int = 0

    @property
    def automatic(self) -> bool:
        """Whether the rule itself set the status."""
        return self.status_by == AUTOMATIC


@dataclass(frozen=True)
class Verdict:
    """What a site's status becomes, why, and from when its probe jobs count (in ``test``)."""

    status: str
    reason: str
    probe_at: datetime | None = None


def judge(site: SiteHealth, policy: HealthPolicy, now: datetime) -> Verdict | None:
    """The site's new status, or None when it stays as it is."""
    if site.status == "online":
        return _failing(site, policy, now)
    if site.status == "test" and site.automatic:
        return _probed(site, policy, now)
    return None


def _failing(site: SiteHealth, policy: HealthPolicy, now: datetime) -> Verdict | None:
    if site.failed >= policy.min_failures and site.finished == 0:
        return Verdict("test", f"all {site.failed} jobs that ended here lately failed", now)
    if site.idle:
        return Verdict(
            "test",
            f"no pilot claimed a job for {policy.idle_s:.0f} s while {site.idle} were activated",
            now,
        )
    if site.stuck:
        return Verdict(
            "test",
            f"{site.stuck} job(s) sent to pilots more than {policy.start_timeout_s:.0f} s ago"
            " never started",
            now,
        )
    return None


def _probed(site: SiteHealth, policy: HealthPolicy, now: datetime) -> Verdict | None:
    if site.finished > site.failed:
        return Verdict(
            "online", f"{site.finished} probe job(s) finished, {site.failed} failed", None
        )
    if site.failed >= policy.probe_jobs:
        again = now + timedelta(seconds=policy.probe_interval_s)
        return Verdict(
            "test",
            f"{site.failed} probe job(s) failed, {site.finished} finished;"
            f" probes again from {when(again)}",
            again,
        )
    return None
