"""Place a defined job attempt at a site and activate it: the dispatch goes to
the outbox in the caller's transaction. Used for new jobs and for retries."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from broker import topology
from broker.messaging.publisher import Outgoing
from broker.protocol import JobDispatch, JobSpec, encode
from broker.states import JobState
from broker.store import outbox, transitions
from broker.store.transitions import Change
from broker.topology import resource_type

S = JobState


@dataclass(frozen=True)
class Placement:
    """A job attempt in ``defined``, the site chosen for it, and why."""

    spec: JobSpec
    attempt: int
    site: str
    why: str
    record: dict[str, Any] | None = None

    def values(self) -> dict[str, Any]:
        """Columns set on the job as it is placed: its site, and the brokerage record."""
        if self.record is None:
            return {"site": self.site}
        return {"site": self.site, "brokerage": self.record}


def activate(conn: Connection, placements: Iterable[Placement], now: datetime) -> int:
    """``defined → assigned → activated``, with a dispatch in the outbox; how many."""
    placements = list(placements)
    changes = []
    for p in placements:
        changes.append(
            Change(p.spec.id, p.attempt, S.DEFINED, S.ASSIGNED, reason=p.why, values=p.values())
        )
        changes.append(
            Change(
                p.spec.id, p.attempt, S.ASSIGNED, S.ACTIVATED, reason="no input data to wait for"
            )
        )
    applied = transitions.apply(conn, changes, now)
    activated = {c.job_id for c in applied if c.to_state == S.ACTIVATED}
    outbox.put(conn, [_dispatch(p) for p in placements if p.spec.id in activated])
    return len(activated)


def _dispatch(p: Placement) -> Outgoing:
    rtype = resource_type(p.spec.cores, p.spec.memory_mb)
    body = encode(JobDispatch(p.spec.id, p.attempt, p.site, rtype, p.spec.priority))
    return Outgoing(topology.JOBS_EXCHANGE, topology.job_routing_key(p.site, rtype), body)
