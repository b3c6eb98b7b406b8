"""Place job attempts at sites and activate them.

``assign`` records where a ``defined`` attempt goes and why (``assigned``);
``activate`` moves ``assigned`` attempts whose inputs are at their site to
``activated`` and puts their dispatch in the outbox, in the caller's
transaction. Used for new jobs, retries and completed subscriptions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from broker import topology
from broker.messaging.publisher import Outgoing
from broker.operations import throttle
from broker.operations.throttle import Limits, Row
from broker.protocol import JobDispatch, JobSpec, encode
from broker.states import JobState
from broker.store import outbox, transitions
from broker.store.datasets import chunks
from broker.store.keys import attempts_in
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
    record: dict[str, Any] | None = None

    def values(self) -> dict[str, Any]:
        """Columns set on the job as it is placed: its site, and the brokerage record."""
        if self.record is None:
            return {"site": self.site}
        return {"site": self.site, "brokerage": self.record}


@dataclass(frozen=True)
class JobRef:
    """One attempt of a job."""

    job_id: str
    attempt: int


def assign(conn: Connection, placements: Iterable[Placement], now: datetime) -> list[Placement]:
    """``defined → assigned`` with the site and the reason recorded; the placements applied."""
    placements = list(placements)
    changes = [
        Change(p.spec.id, p.attempt, S.DEFINED, S.ASSIGNED, reason=p.why, values=p.values())
        for p in placements
    ]
    applied = {(c.job_id, c.attempt) for c in transitions.apply(conn, changes, now)}
    return [p for p in placements if (p.spec.id, p.attempt) in applied]


def activate(
    conn: Connection,
    refs: Iterable[JobRef],
    now: datetime,
    limits: Limits,
    why: str = NOTHING_TO_WAIT_FOR,
) -> int:
    """``assigned → activated`` with a dispatch in the outbox, as far as each site's cap
    (the deployment's ``limits``, ``Limits.of(settings)``) allows; the others go to
    ``throttled``. How many were activated."""
    rows = _rows(conn, list(refs), S.ASSIGNED)
    go, wait = throttle.split(conn, rows, limits)
    held = [r for r in rows if r["id"] in wait]
    transitions.apply(
        conn,
        [
            Change(r["id"], r["attempt"], S.ASSIGNED, S.THROTTLED, reason=wait[r["id"]])
            for r in held
        ],
        now,
    )
    return _activate(conn, go, S.ASSIGNED, why, now)


def release(
    conn: Connection,
    now: datetime,
    limits: Limits,
    site_names: Iterable[str] = (),
    skip_locked: bool = False,
) -> int:
    """``throttled → activated`` as sites' queues drain, by shares then priority; how many.

    Only the named sites, or every site with throttled jobs when none is named; with
    ``skip_locked`` not the sites another transaction is activating at.
    """
    rows, use = throttle.next_throttled(conn, limits, site_names, skip_locked)
    go, _ = throttle.split(conn, rows, limits, use)
    return _activate(conn, go, S.THROTTLED, "the site's queue has room", now)


def _activate(conn: Connection, rows: Sequence[Row], frm: JobState, why: str, now: datetime) -> int:
    changes = [Change(r["id"], r["attempt"], frm, S.ACTIVATED, reason=why) for r in rows]
    activated = {c.job_id for c in transitions.apply(conn, changes, now)}
    outbox.put(conn, [dispatch(r) for r in rows if r["id"] in activated])
    return len(activated)


def _rows(conn: Connection, refs: list[JobRef], state: JobState) -> list[Row]:
    """The rows of ``refs`` still at that attempt and in ``state``."""
    rows: list[Row] = []
    for part in chunks(refs):
        keys = ((r.job_id, r.attempt) for r in part)
        stmt = select(*throttle.COLUMNS).where(attempts_in(conn, keys, [state.value]))
        rows += conn.execute(stmt).mappings()
    return rows


def dispatch(row: Row) -> Outgoing:
    """The message that puts an activated job in its site's queue."""
    site, rtype = row["site"], row["resource_type"]
    body = encode(JobDispatch(row["id"], row["attempt"], site, rtype, row["priority"]))
    return Outgoing(topology.JOBS_EXCHANGE, topology.job_routing_key(site, rtype), body)
