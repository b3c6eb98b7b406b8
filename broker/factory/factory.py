"""The pilot factory's loop: per site, poll its pilots, then submit what the plan says.

Each cycle, for each site it serves (that no other factory of the same batch
system holds: ``broker.duties``), the factory asks the batch system how
its live pilots are doing and records it; cancels every pilot of a site that
is ``offline``; otherwise submits pilots for the site's activated jobs
within the limits (``plan``); and checks whether most of the site's recent
pilots die without running a job (``health``).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

from sqlalchemy import Connection, Engine

from broker.duties import Duties
from broker.errors import PandaMQError, RecoverableError
from broker.factory import pilots
from broker.factory.health import SiteHealth
from broker.factory.pilots import LivePilot, Work
from broker.factory.plan import Limits, plan
from broker.factory.submitter import LIVE_STATES, BatchStatus, PilotState, SlotShape, Submitter
from broker.metrics import PILOTS_DIED, PILOTS_ENDED, PILOTS_SUBMITTED
from broker.settings import Settings
from broker.store.clock import now
from broker.store.engine import transaction
from broker.store.sites import known_sites, list_sites

log = logging.getLogger(__name__)

OFFLINE = "offline"


def new_pilot_id() -> str:
    """A unique, routing-key-safe pilot name."""
    return f"pilot-{uuid.uuid4().hex[:16]}"


class PilotFactory:
    """Keeps the sites it serves supplied with pilots through one batch system."""

    def __init__(
        self, settings: Settings, engine: Engine, submitter: Submitter, sites: Sequence[str] = ()
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._submitter = submitter
        #: Sites served; none: every site in the catalogue.
        self._sites = tuple(sites)
        self._limits = Limits.of(settings)
        self.health = SiteHealth(settings.factory_failure_window, settings.factory_failure_fraction)
        self.duties = Duties(engine, settings, "factory")

    def run(self, stop: threading.Event) -> None:
        """A cycle every ``factory_interval_s`` until ``stop``; outages wait for the next cycle."""
        served = ", ".join(self._sites) or "every site"
        log.info("pilot factory serving %s through %s", served, self._submitter.name)
        while not stop.is_set():
            try:
                self.cycle()
            except RecoverableError as exc:
                log.warning("pilot factory: %s; next cycle in %.0f s", exc, self._interval())
            stop.wait(self._interval())
        self.duties.let_go()
        log.info("pilot factory stopped")

    def _interval(self) -> float:
        return self._settings.factory_interval_s

    def cycle(self) -> int:
        """One pass over the sites this factory holds; the number of pilots submitted."""
        with transaction(self._engine) as conn:
            statuses = self._site_statuses(conn)
        return sum(
            self._serve(site, status) for site, status in statuses.items() if self._holds(site)
        )

    def _holds(self, site: str) -> bool:
        """Whether this factory serves ``site`` this cycle: no other factory of the same
        batch system holds it (a factory that died frees its sites after ``lease_s``)."""
        ttl = self._settings.factory_interval_s + self._settings.lease_s
        return self.duties.hold(f"factory:{self._submitter.name}:{site}", ttl)

    def _site_statuses(self, conn: Connection) -> dict[str, str]:
        if self._sites:
            return known_sites(conn, self._sites)
        return {site["name"]: site["status"] for site in list_sites(conn)}

    def _serve(self, site: str, status: str) -> int:
        live = self._poll(site)
        if status == OFFLINE:
            self._cancel(site, live)
            return 0
        submitted = self._submit(site, live)
        with transaction(self._engine) as conn:
            self.health.check(conn, site)
        return submitted

    def _poll(self, site: str) -> list[LivePilot]:
        """Record what the batch system says of the site's live pilots; those still live."""
        with transaction(self._engine) as conn:
            live = pilots.live_pilots(conn, site, self._submitter.name)
        found = self._submitter.poll([p.batch_id for p in live if p.batch_id])
        missed = BatchStatus(PilotState.MISSED)
        now_live, changes = [], {}
        for pilot in live:
            status = found.get(pilot.batch_id, missed) if pilot.batch_id else missed
            if status.state != pilot.state:
                changes[pilot.id] = status
            if status.state in LIVE_STATES:
                now_live.append(replace(pilot, state=status.state))
        self._record(site, changes)
        return now_live

    def _record(self, site: str, changes: dict[str, BatchStatus]) -> None:
        """Store pilots' new states; count those that ended, and those that died without a job."""
        ended = [pid for pid, status in changes.items() if status.state not in LIVE_STATES]
        with transaction(self._engine) as conn:
            pilots.record_states(conn, changes, now())
            died = pilots.died_without_a_job(conn, ended) if ended else []
        for pilot_id in ended:
            PILOTS_ENDED.labels(site=site, state=changes[pilot_id].state).inc()
        if died:
            PILOTS_DIED.labels(site=site).inc(len(died))
            log.warning("site %s: %d pilot(s) died without running a job", site, len(died))

    def _cancel(self, site: str, live: list[LivePilot]) -> None:
        """Cancel every live pilot of an offline site."""
        if not live:
            return
        self._submitter.cancel([p.batch_id for p in live if p.batch_id])
        self._record(site, {p.id: BatchStatus(PilotState.CANCELLED) for p in live})
        log.info("site %s is offline: cancelled %d pilot(s)", site, len(live))

    def _submit(self, site: str, live: list[LivePilot]) -> int:
        """Submit pilots for the site's activated jobs, as the plan says."""
        with transaction(self._engine) as conn:
            work = pilots.queued_work(conn, site)
        queued = Counter(p.resource_type for p in live if p.state == PilotState.SUBMITTED)
        running = Counter(p.resource_type for p in live if p.state == PilotState.RUNNING)
        activated = {resource: w.jobs for resource, w in work.items()}
        wanted = plan(activated, queued, running, self._limits)
        return sum(self._submit_shape(self._shape(site, r, work[r]), n) for r, n in wanted.items())

    def _shape(self, site: str, resource: str, work: Work) -> SlotShape:
        """A slot that fits every activated job of the resource type, for at least the walltime."""
        walltime = max(self._settings.factory_walltime_s, work.walltime_s)
        return SlotShape(site, resource, work.cores, work.memory_mb, walltime)

    def _submit_shape(self, shape: SlotShape, count: int) -> int:
        """Record, submit, and record the batch ids of ``count`` pilots of one shape."""
        ids = [new_pilot_id() for _ in range(count)]
        with transaction(self._engine) as conn:
            pilots.record_submitted(conn, shape, self._submitter.name, ids, now())
        try:
            batch_ids = self._submitter.submit(shape, ids)
        except PandaMQError as exc:
            log.error("site %s: submitting %d pilot(s) failed: %s", shape.site, count, exc)
            self._record(shape.site, {pid: BatchStatus(PilotState.FAILED) for pid in ids})
            return 0
        with transaction(self._engine) as conn:
            pilots.record_batch_ids(conn, dict(zip(ids, batch_ids, strict=True)))
        PILOTS_SUBMITTED.labels(site=shape.site, resource_type=shape.resource_type).inc(count)
        log.info(
            "site %s: submitted %d %s pilot(s) (%d cores, %d MB) to %s",
            shape.site,
            count,
            shape.resource_type,
            shape.cores,
            shape.memory_mb,
            self._submitter.name,
        )
        return count
