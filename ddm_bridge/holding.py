"""Which DDM bridge serves each subscription, and registers each attempt's reported
outputs: any number of bridges share one database.

A bridge serves a subscription in progress while it holds it: the row names
the bridge (``subscriptions.bridge``) and the time it holds it until
(``bridge_until``), renewed for ``lease_s`` once half of it has passed. A bridge takes the
subscriptions no bridge holds (new ones, and those of a bridge that died,
once their time ran out) with the same statement, so each is served, and its
files copied, by one bridge at a time. On PostgreSQL the rows are read
``FOR UPDATE SKIP LOCKED``: a row another bridge is taking at that moment is
left to it, and rechecked by its own columns when it was taken meanwhile.

The outputs pilots reported (``broker.store.reports``) are held the same way,
so that two bridges never register one attempt's outputs together; a report a
bridge took and did not finish (it died) is taken by another once the hold ran out.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, or_, select, update

from broker.protocol import JobEvent
from broker.store import reports
from broker.store.datasets import chunks
from broker.store.schema import reported_outputs, subscriptions
from broker.store.subscriptions import ACTIVE


def serve(
    conn: Connection, bridge: str, at: datetime, until: datetime, renew_from: datetime
) -> list[tuple[str, str]]:
    """The subscriptions in progress that ``bridge`` serves, (dataset, site) in the order they
    were made: those it holds, and those no bridge holds at ``at``, which it takes until
    ``until``; its own held only until before ``renew_from`` are renewed (a row is
    rewritten about twice per hold, not on every pass)."""
    free = or_(
        subscriptions.c.bridge_until.is_(None),
        subscriptions.c.bridge_until <= at,
        (subscriptions.c.bridge == bridge) & (subscriptions.c.bridge_until < renew_from),
    )
    stmt = select(subscriptions.c.id).where(subscriptions.c.state.in_(ACTIVE), free)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    ids = list(conn.scalars(stmt))
    for part in chunks(ids):
        conn.execute(
            update(subscriptions)
            .where(subscriptions.c.id.in_(part))
            .values(bridge=bridge, bridge_until=until)
        )
    mine = (
        select(subscriptions.c.dataset, subscriptions.c.site)
        .where(
            subscriptions.c.state.in_(ACTIVE),
            subscriptions.c.bridge == bridge,
            subscriptions.c.bridge_until > at,
        )
        .order_by(subscriptions.c.id)
    )
    return [(r.dataset, r.site) for r in conn.execute(mine)]


def take_reports(
    conn: Connection, bridge: str, at: datetime, until: datetime, limit: int
) -> list[JobEvent]:
    """Up to ``limit`` reported outputs for ``bridge`` to register, oldest first: those it
    holds already (a pass that failed) and those no bridge holds at ``at``, all held
    until ``until``."""
    r = reported_outputs.c
    free = or_(r.bridge_until.is_(None), r.bridge_until <= at, r.bridge == bridge)
    stmt = (
        select(r.job_id, r.attempt, r.event)
        .where(free)
        .order_by(r.reported_at, r.job_id)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    rows = conn.execute(stmt).all()
    for attempt in {row.attempt for row in rows}:
        ids = [row.job_id for row in rows if row.attempt == attempt]
        for part in chunks(ids):
            conn.execute(
                update(reported_outputs)
                .where(r.attempt == attempt, r.job_id.in_(part))
                .values(bridge=bridge, bridge_until=until)
            )
    return [reports.parse(row.event) for row in rows]


def let_go(conn: Connection, bridge: str) -> None:
    """Free the subscriptions and reports ``bridge`` holds (it is stopping): another
    bridge takes them at once."""
    conn.execute(
        update(subscriptions)
        .where(subscriptions.c.bridge == bridge, subscriptions.c.state.in_(ACTIVE))
        .values(bridge_until=None)
    )
    conn.execute(
        update(reported_outputs)
        .where(reported_outputs.c.bridge == bridge)
        .values(bridge_until=None)
    )
