"""Which DDM bridge serves each subscription: any number of bridges share one database.

A bridge serves a subscription in progress while it holds it: the row names
the bridge (``subscriptions.bridge``) and the time it holds it until
(``bridge_until``), renewed for ``lease_s`` once half of it has passed. A bridge takes the
subscriptions no bridge holds (new ones, and those of a bridge that died,
once their time ran out) with the same statement, so each is served, and its
files copied, by one bridge at a time. On PostgreSQL the rows are read
``FOR UPDATE SKIP LOCKED``: a row another bridge is taking at that moment is
left to it, and rechecked by its own columns when it was taken meanwhile.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, or_, select, update

from broker.store.datasets import chunks
from broker.store.schema import subscriptions
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


def let_go(conn: Connection, bridge: str) -> None:
    """Free the subscriptions ``bridge`` holds (it is stopping): another bridge takes them
    at once."""
    conn.execute(
        update(subscriptions)
        .where(subscriptions.c.bridge == bridge, subscriptions.c.state.in_(ACTIVE))
        .values(bridge_until=None)
    )
