"""Persist submissions, brokered to a site (``assigned``) and, having no input
data to wait for, activated through the outbox (each job written once, in the
state it reaches: ``broker.operations.intake``). A job that no site fits is kept,
failed with a brokerage error that says why."""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import Connection, Engine

from broker.api import Receipt
from broker.messaging.consumer import Incoming
from broker.operations.brokerage import Brokerage
from broker.operations.intake import store_jobs
from broker.operations.throttle import Limits
from broker.operations.user_caps import Caps, QueuedCap
from broker.protocol import JobSpec
from broker.security import senders
from broker.settings import Settings
from broker.store.clock import now
from broker.store.datasets import files_by_did
from broker.store.engine import transaction
from broker.store.jobs import known_tasks, owners_of
from broker.store.sites import known_sites

log = logging.getLogger(__name__)

#: Unregistered input files named in a refusal; the rest are counted.
MISSING_SHOWN = 3


class SubmissionHandler:
    """Handles batches from ``pandamq.submit``; each batch is one transaction."""

    def __init__(
        self,
        engine: Engine,
        site_queues_ready: Callable[[set[str]], None],
        settings: Settings | None = None,
    ) -> None:
        self._engine = engine
        self._site_queues_ready = site_queues_ready
        self._settings = settings or Settings()

    def __call__(self, batch: list[Incoming[JobSpec]]) -> None:
        """Persist, broker and activate the new jobs in ``batch``."""
        t = now()
        with transaction(self._engine) as conn:
            fresh = self._fresh(conn, batch)
            owners = {i.message.id: i.user_id for i in fresh}
            brokerage = Brokerage.of(conn, self._settings)
            limits = Limits.of(self._settings)
            valid = self._valid(conn, fresh, QueuedCap(conn, Caps.of(self._settings)))
            placed, _ = store_jobs(conn, brokerage, valid, owners, t, limits)
        for incoming in batch:
            incoming.reply(Receipt(incoming.message.id, accepted=True))
        self._site_queues_ready({p.site for p in placed})
        if placed:
            log.info("accepted %d job(s)", len(placed))

    def _fresh(self, conn: Connection, batch: list[Incoming[JobSpec]]) -> list[Incoming[JobSpec]]:
        """Submissions not seen before; re-sent ones are dropped (idempotent)."""
        for incoming in batch:
            if not incoming.message.id:
                incoming.refuse("job spec: field 'id' is required on the wire")
        named = [
            i for i in senders.allowed(batch, "submission", senders.user_required) if i.message.id
        ]
        seen = owners_of(conn, (i.message.id for i in named))
        fresh: dict[str, Incoming[JobSpec]] = {}
        for incoming in named:
            job_id = incoming.message.id
            if job_id in seen and seen[job_id] != incoming.user_id:
                incoming.refuse(f"job spec: job id {job_id!r} is taken by another job")
            elif fresh.setdefault(job_id, incoming) is not incoming:
                incoming.refuse(f"job spec: job id {job_id!r} is given twice")
        # A job already stored for this sender is a redelivery: it is answered, not stored.
        return [i for job_id, i in fresh.items() if job_id not in seen]

    @staticmethod
    def _valid(conn: Connection, fresh: list[Incoming[JobSpec]], cap: QueuedCap) -> list[JobSpec]:
        """The new jobs that can be brokered; refuse those naming what does not exist, and
        those beyond their user's cap of queued jobs."""
        named = {s for i in fresh for s in (i.message.site, i.message.output_destination) if s}
        statuses = known_sites(conn, named)
        tasks = known_tasks(conn, {i.message.task_id for i in fresh if i.message.task_id})
        registered = set(files_by_did(conn, {d for i in fresh for d in i.message.input_files}))
        valid = []
        for incoming in fresh:
            refusal = (
                _refusal(incoming.message, statuses, tasks)
                or _unregistered(incoming.message, registered)
                or _over_cap(cap.refusal(incoming.user_id))
            )
            if refusal is None:
                valid.append(incoming.message)
            else:
                incoming.refuse(refusal)
                log.warning("refused job %s: %s", incoming.message.id, refusal)
        return valid


def _refusal(spec: JobSpec, statuses: dict[str, str], tasks: set[str]) -> str | None:
    """Why a submission cannot even be brokered: it names a site or task that is not there."""
    if spec.task_id and spec.task_id not in tasks:
        return f"job spec: task {spec.task_id!r} does not exist"
    if spec.site and spec.site not in statuses:
        return (
            f"job spec: site {spec.site!r} is not in the site catalogue "
            "(see `pandamq sites`; an operator adds it with `pandamq sites add`)"
        )
    if spec.site and statuses[spec.site] == "offline":
        return f"job spec: site {spec.site!r} is offline and takes no jobs"
    if spec.output_destination and spec.output_destination not in statuses:
        return (
            f"job spec: output_destination {spec.output_destination!r} is not in the site "
            "catalogue (see `pandamq sites`)"
        )
    return None


def _over_cap(why: str | None) -> str | None:
    return None if why is None else f"job spec: {why}"


def _unregistered(spec: JobSpec, registered: set[str]) -> str | None:
    """Why a job cannot run: an input file that no dataset holds (it would fail later)."""
    missing = [did for did in spec.input_files if did not in registered]
    if not missing:
        return None
    shown = ", ".join(repr(did) for did in missing[:MISSING_SHOWN])
    more = f" and {len(missing) - MISSING_SHOWN} more" if len(missing) > MISSING_SHOWN else ""
    return (
        f"job spec: input file {shown}{more} is not registered "
        "(an operator adds files with `pandamq datasets add` or `register`)"
    )
