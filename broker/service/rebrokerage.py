"""Re-brokerage: jobs waiting at a site that cannot run them go elsewhere.

Two cases (PanDA's): the site went ``offline``, or no
pilot has taken work there for ``rebrokerage_idle_s``. Each such job that
no pilot holds yet (``assigned``, ``throttled`` or ``activated``) has its
attempt closed (taskbuffer error ``REASSIGNED``) and a new attempt brokered
anew, away from that site. The old attempt's dispatch may still sit in the
old queue; a pilot claiming it is refused (superseded attempt), so a job is
never run twice. A job that names its site keeps waiting for it.

Also here: the automatic rule on site statuses (``broker.service.site_health``),
judged first, so that a site just put in ``test`` gets no job of this pass;
the set-up of retries whose backoff is over (``broker.operations.backoff``); and
the periodic release of throttled jobs, for queues that drain without claims
this process saw. Safe with several broker processes: rows
are taken with ``FOR UPDATE SKIP LOCKED`` and every change is a
compare-and-set.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, RowMapping, func, select

from broker.error_codes import ErrorFamily, TaskBufferError
from broker.operations import backoff, retries
from broker.operations.activation import Placement, release
from broker.operations.brokerage import Brokerage, Unplaced, settle
from broker.operations.scouting import Scouting, scouting_tasks
from broker.operations.throttle import Limits
from broker.service.site_health import SiteHealthCheck
from broker.settings import Settings
from broker.states import WAITING_AT_SITE, JobState
from broker.store import transitions
from broker.store.clock import now
from broker.store.engine import transaction
from broker.store.jobs import spec_of
from broker.store.schema import jobs, pilots, sites
from broker.store.transitions import Change

log = logging.getLogger(__name__)

S = JobState

#: How many jobs one pass re-brokers at most (the rest wait for the next pass).
BATCH = 1000


class Rebrokerage:
    """Periodic work of the broker service: site statuses, re-brokerage, retries whose
    backoff is over, then the release of throttled jobs."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self._engine = engine
        self._settings = settings
        self._limits = Limits.of(settings)
        self._health = SiteHealthCheck(engine, settings)
        self._scouting = Scouting(settings)

    def check(self, at: datetime | None = None) -> int:
        """One pass; how many site statuses changed and jobs were re-brokered or released.
        Tasks whose scouts ended without an event (the watchdog failed them) are reviewed
        too."""
        t = at or now()
        changed = self._health.check(t)
        with transaction(self._engine) as conn:
            moved = self._rebroker(conn, _stranded(conn, t, self._settings.rebrokerage_idle_s), t)
            moved += backoff.set_up_due(conn, t, self._limits)
            self._scouting.review(conn, scouting_tasks(conn), t)
            return changed + moved + release(conn, t, self._limits, skip_locked=True)

    def _rebroker(self, conn: Connection, rows: list[tuple[RowMapping, str]], t: datetime) -> int:
        if not rows:
            return 0
        closes = [_close(row, why) for row, why in rows]
        closed = {c.job_id for c in transitions.apply(conn, closes, t)}
        wanted = [
            (row, retries.Decision(True, f"re-brokered: {why}", spec_of(row)))
            for row, why in rows
            if row["id"] in closed
        ]
        started = retries.new_attempts(conn, wanted, t, ended=S.CLOSED)
        brokerage = Brokerage.of(conn, self._settings)
        placed, unplaced = [], []
        for row, decision in wanted:
            if row["id"] not in started:
                continue
            choice = brokerage.decide(decision.spec, exclude={row["site"]})
            attempt = row["attempt"] + 1
            if choice.site is None:
                unplaced.append(Unplaced(decision.spec, attempt, choice))
            else:
                why = f"{decision.why}; {choice.why}"
                placed.append(Placement(decision.spec, attempt, choice.site, why, choice.record()))
        settle(conn, placed, unplaced, self._limits, t)
        log.info("re-brokered %d job(s), %d found no site", len(placed), len(unplaced))
        return len(started)


def _stranded(conn: Connection, t: datetime, idle_s: float) -> list[tuple[RowMapping, str]]:
    """Waiting jobs at offline sites, and activated jobs at idle sites, with why.

    One statement for each, so that each reads through an index: with both in
    one ``OR``, PostgreSQL read every job in id order (0.9 s a pass with a
    backlog of 300,000 waiting jobs).
    """
    cutoff = t - timedelta(seconds=idle_s)
    down = select(sites.c.name).where(sites.c.status == "offline")
    busy = select(pilots.c.site).where(pilots.c.last_seen >= cutoff)
    found: list[tuple[RowMapping, str]] = []
    for where in (
        jobs.c.site.in_(down) & jobs.c.state.in_(WAITING_AT_SITE),
        (jobs.c.state == S.ACTIVATED) & (jobs.c.modified_at < cutoff) & jobs.c.site.not_in(busy),
    ):
        stmt = (
            select(jobs, sites.c.status.label("site_status"))
            .join(sites, sites.c.name == jobs.c.site)
            .where(where, func.coalesce(jobs.c.spec["site"].as_string(), "") == "")
            .order_by(jobs.c.id)
            .limit(BATCH - len(found))
        )
        if conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update(of=jobs, skip_locked=True)
        found += [(row, _why(row, idle_s)) for row in conn.execute(stmt).mappings()]
    # A job at an offline site that is also idle comes once.
    return list({row["id"]: (row, why) for row, why in found}.values())[:BATCH]


def _why(row: RowMapping, idle_s: float) -> str:
    if row["site_status"] == "offline":
        return f"site {row['site']} is offline"
    return f"no pilot took work at site {row['site']} for {idle_s:.0f} s"


def _close(row: RowMapping, why: str) -> Change:
    return Change(
        row["id"],
        row["attempt"],
        JobState(row["state"]),
        S.CLOSED,
        reason=f"pulled back: {why}",
        values={
            "error_family": ErrorFamily.TASKBUFFER.value,
            "error_code": int(TaskBufferError.REASSIGNED),
            "diagnostic": f"pulled back: {why}",
        },
    )
