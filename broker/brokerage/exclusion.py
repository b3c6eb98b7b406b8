"""Sites left out for a while: for one task whose jobs fail there, and the probe jobs
of a site the automatic rule put in ``test``.

Pure functions: the broker service gathers the outcomes from SQL. Every reason
says why and until when, so that ``pandamq job ID`` and the monitor can show it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

#: ``status_by`` of a status the broker set itself (docs/brokerage.md).
AUTOMATIC = "automatic"


def when(t: datetime) -> str:
    """A time as reasons print it: ISO 8601 to the second, UTC."""
    return t.isoformat(timespec="seconds")


@dataclass(frozen=True)
class ExclusionPolicy:
    """When a task's failures at a site leave the site out for the task."""

    min_failures: int = 3
    ratio: float = 2.0
    window_s: float = 3600.0

    def excludes(self, failed: int, finished: int) -> bool:
        """Whether ``failed`` failures against ``finished`` successes leave a site out."""
        return failed >= self.min_failures and failed > self.ratio * finished


@dataclass(frozen=True)
class Outcomes:
    """When a task's attempts at one site ended, in the window: failed and finished."""

    failed: tuple[datetime, ...] = ()
    finished: tuple[datetime, ...] = ()


def task_exclusion(task_id: str, outcomes: Outcomes, policy: ExclusionPolicy) -> str | None:
    """Why a site is left out for the jobs of ``task_id`` and until when, or None."""
    failed, finished = len(outcomes.failed), len(outcomes.finished)
    if not policy.excludes(failed, finished):
        return None
    return (
        f"task {task_id}: {failed} failed and {finished} finished here in the last"
        f" {policy.window_s:.0f} s (left out from {policy.min_failures} failures and more"
        f" than {policy.ratio:g} x finished), until {when(exclusion_ends(outcomes, policy))}"
    )


def exclusion_ends(outcomes: Outcomes, policy: ExclusionPolicy) -> datetime:
    """When the exclusion ends if nothing else ends there: outcomes leave the window
    oldest first, until the failures no longer outnumber the successes enough."""
    window = timedelta(seconds=policy.window_s)
    events = sorted([(t, 1, 0) for t in outcomes.failed] + [(t, 0, 1) for t in outcomes.finished])
    failed, finished = len(outcomes.failed), len(outcomes.finished)
    for t, lost_failure, lost_success in events:
        failed, finished = failed - lost_failure, finished - lost_success
        if not policy.excludes(failed, finished):
            return t + window
    return events[-1][0] + window if events else datetime.max


@dataclass(frozen=True)
class Probation:
    """A site the automatic rule put in ``test``: it takes at most ``jobs`` jobs at once
    (its probes), none before ``paused_until`` when its last probes failed."""

    jobs: int
    since: datetime
    why: str
    paused_until: datetime | None = None

    def refusal(self, at_site: int) -> str | None:
        """Why the site takes no more probe jobs while ``at_site`` jobs are there, or None."""
        head = f"status test since {when(self.since)} (automatic: {self.why})"
        if self.paused_until is not None:
            return f"{head}: its probe jobs failed, next probes from {when(self.paused_until)}"
        if at_site >= self.jobs:
            return (
                f"{head}: {at_site} probe job(s) there, at most {self.jobs} at once;"
                " until a probe job finishes"
            )
        return None
