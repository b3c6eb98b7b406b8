"""Place job attempts at sites and activate them.

``assign`` records where a ``defined`` attempt goes and why (``assigned``);
``activate`` moves ``assigned`` attempts whose inputs are at their site to
``activated`` and puts their dispatch in the outbox, in the caller's
transaction. Used for new jobs, retries and completed subscriptions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, RowMapping, select, tuple_

from broker import topology
from broker.messaging.publisher import Outgoing
from broker.protocol import JobDispatch, JobSpec, encode
from broker.states import JobState
from broker.store import outbox, transitions
from broker.store.datasets import chunks
from broker.store.schema import jobs
from broker.store.transitions import Change

S = JobState

#: Why a job with nothing to wait for is activated.
NOTHING_TO_WAIT_FOR = "no input data to wait for"


@dataclass(frozen=True)
class Placement:
    """A job attempt in ``defined``, the site chosen for it, and why."""

    spec: JobSpec
    attempt: int
    site: str
    why: str


@dataclass(frozen=True)
class JobRef:
    """One attempt of a job."""

    job_id: str
    attempt: int


def assign(conn: Connection, placements: Iterable[Placement], now: datetime) -> list[Placement]:
    """``defined → assigned`` with the site and the reason recorded; the placements applied."""
    placements = list(placements)
    changes = [
        Change(p.spec.id, p.attempt, S.DEFINED, S.ASSIGNED, reason=p.why, values={"site": p.site})
        for p in placements
    ]
    applied = {(c.job_id, c.attempt) for c in transitions.apply(conn, changes, now)}
    return [p for p in placements if (p.spec.id, p.attempt) in applied]


def activate(
    conn: Connection, refs: Iterable[JobRef], now: datetime, why: str = NOTHING_TO_WAIT_FOR
) -> int:
    """``assigned → activated``, with a dispatch in the outbox; how many were activated."""
    rows = _assigned(conn, list(refs))
    changes = [Change(r["id"], r["attempt"], S.ASSIGNED, S.ACTIVATED, reason=why) for r in rows]
    activated = {c.job_id for c in transitions.apply(conn, changes, now)}
    outbox.put(conn, [_dispatch(r) for r in rows if r["id"] in activated])
    return len(activated)


def _assigned(conn: Connection, refs: list[JobRef]) -> list[RowMapping]:
    """The rows of ``refs`` still at that attempt and ``assigned``."""
    rows: list[RowMapping] = []
    for part in chunks(refs):
        stmt = select(
            jobs.c.id, jobs.c.attempt, jobs.c.site, jobs.c.resource_type, jobs.c.priority
        ).where(
            tuple_(jobs.c.id, jobs.c.attempt).in_([(r.job_id, r.attempt) for r in part]),
            jobs.c.state == S.ASSIGNED.value,
        )
        rows += conn.execute(stmt).mappings()
    return rows


def _dispatch(row: RowMapping) -> Outgoing:
    site, rtype = row["site"], row["resource_type"]
    body = encode(JobDispatch(row["id"], row["attempt"], site, rtype, row["priority"]))
    return Outgoing(topology.JOBS_EXCHANGE, topology.job_routing_key(site, rtype), body)
