"""Subscribe sites to the inputs their assigned jobs lack.

For each ``assigned`` job not yet waiting on anything, the inputs missing at
its site are either already on their way (a dispatch dataset subscribed to
that site holds them: the job waits on it too) or go into one new dispatch
dataset per site and pass, subscribed to the site. A job whose inputs
arrived meanwhile is activated at once.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from datetime import datetime

from sqlalchemy import Connection

from broker.operations import inputs
from broker.operations.activation import JobRef, activate
from broker.operations.inputs import Standing
from broker.operations.throttle import Limits
from broker.store import datasets, job_files, subscriptions

log = logging.getLogger(__name__)

#: Jobs looked at per pass.
BATCH = 5000

COMPLETE = "all input files are at the site"


def dispatch_name(site: str) -> str:
    """A new dispatch dataset's name (PanDA's ``panda.dis.`` prefix)."""
    return f"panda.dis.{site}.{uuid.uuid4().hex[:12]}"


def subscribe_waiting(
    conn: Connection, now: datetime, limits: Limits
) -> tuple[int, list[tuple[str, str]]]:
    """Link waiting jobs to dispatch datasets; (jobs activated within the sites' ``limits``,
    new (dataset, site) pairs)."""
    waiting = job_files.waiting_for_dispatch(conn, BATCH)
    if not waiting:
        return 0, []
    stand = inputs.of_jobs(conn, (job_id for job_id, _, _ in waiting))
    missing = {j: i.missing for j, i in stand.items() if i.standing == Standing.MISSING}
    ready = [
        JobRef(job_id, attempt)
        for job_id, attempt, _ in waiting
        if stand[job_id].standing == Standing.PRESENT
    ]
    activated = activate(conn, ready, now, limits, COMPLETE)
    by_site: dict[str, list[str]] = defaultdict(list)
    for job_id, _, site in waiting:
        if job_id in missing:
            by_site[site].append(job_id)
    new = [
        sub
        for site, jobs in by_site.items()
        if (sub := _dispatch_to(conn, site, {j: missing[j] for j in jobs}, now)) is not None
    ]
    return activated, new


def _dispatch_to(
    conn: Connection, site: str, missing: dict[str, list[int]], now: datetime
) -> tuple[str, str] | None:
    """Link the jobs of one site; the new subscription if files had to be asked for."""
    wanted = list(dict.fromkeys(f for files in missing.values() for f in files))
    carrier = subscriptions.in_flight(conn, site, wanted)
    fresh = [f for f in wanted if f not in carrier]
    created = None
    if fresh:
        name = dispatch_name(site)
        datasets.ensure_dataset(conn, name, "dispatch", now, site=site)
        datasets.add_to_dataset(conn, name, fresh, now)
        datasets.close(conn, name, now)
        subscriptions.create(conn, name, site, len(fresh), now)
        carrier |= dict.fromkeys(fresh, name)
        created = (name, site)
        log.info(
            "subscribed %s to %s: %d file(s) for %d job(s)", site, name, len(fresh), len(missing)
        )
    job_files.set_dispatch(
        conn, [(job, f, carrier[f]) for job, files in missing.items() for f in files]
    )
    return created
