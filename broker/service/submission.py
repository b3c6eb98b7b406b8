"""Persist submissions (``defined``), place them at a site (``assigned``) and,
having no input data to wait for, activate them through the outbox."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable

from sqlalchemy import Connection, Engine

from broker.messaging.consumer import Incoming
from broker.protocol import JobSpec
from broker.service.activation import JobRef, Placement, activate, assign
from broker.store.clock import now
from broker.store.engine import transaction
from broker.store.jobs import existing_ids, insert_defined, known_tasks
from broker.store.sites import known_sites, online_sites

log = logging.getLogger(__name__)


class SubmissionHandler:
    """Handles batches from ``pandamq.submit``; each batch is one transaction."""

    def __init__(self, engine: Engine, site_queues_ready: Callable[[set[str]], None]) -> None:
        self._engine = engine
        self._site_queues_ready = site_queues_ready

    def __call__(self, batch: list[Incoming[JobSpec]]) -> None:
        """Persist, place and activate the new jobs in ``batch``."""
        t = now()
        with transaction(self._engine) as conn:
            fresh = self._fresh(conn, batch)
            placed = self._place(conn, fresh)
            insert_defined(conn, [p.spec for p in placed], t)
            assigned = assign(conn, placed, t)
            activate(conn, [JobRef(p.spec.id, p.attempt) for p in assigned], t)
        self._site_queues_ready({p.site for p in placed})
        if placed:
            log.info("accepted %d job(s)", len(placed))

    def _fresh(self, conn: Connection, batch: list[Incoming[JobSpec]]) -> list[Incoming[JobSpec]]:
        """Submissions not seen before; re-sent ones are dropped (idempotent)."""
        for incoming in batch:
            if not incoming.message.id:
                incoming.refuse("job spec: field 'id' is required on the wire")
        named = [i for i in batch if i.message.id]
        seen = existing_ids(conn, (i.message.id for i in named))
        fresh: dict[str, Incoming[JobSpec]] = {}
        for incoming in named:
            fresh.setdefault(incoming.message.id, incoming)
        return [i for job_id, i in fresh.items() if job_id not in seen]

    def _place(self, conn: Connection, fresh: list[Incoming[JobSpec]]) -> list[Placement]:
        """Where each new job goes; refuse those that can go nowhere."""
        statuses = known_sites(conn, {i.message.site for i in fresh if i.message.site})
        tasks = known_tasks(conn, {i.message.task_id for i in fresh if i.message.task_id})
        online = online_sites(conn) if any(not i.message.site for i in fresh) else []
        placed = []
        for incoming in fresh:
            spec = incoming.message
            site, why = _choose(spec, statuses, online)
            if spec.task_id and spec.task_id not in tasks:
                site, why = None, f"task {spec.task_id!r} does not exist"
            if site is None:
                incoming.refuse(why)
                log.warning("refused job %s: %s", spec.id, why)
                continue
            placed.append(Placement(spec, 1, site, why))
        return placed


def _choose(spec: JobSpec, statuses: dict[str, str], online: list[str]) -> tuple[str | None, str]:
    if spec.site:
        if spec.site not in statuses:
            return None, f"site {spec.site!r} is not in the site catalogue"
        if statuses[spec.site] == "offline":
            return None, f"site {spec.site!r} is offline"
        return spec.site, f"site {spec.site} requested in the job spec"
    if not online:
        return None, "no site is online"
    site = online[zlib.crc32(spec.id.encode()) % len(online)]
    return site, f"site {site} chosen among online sites {', '.join(online)}"
