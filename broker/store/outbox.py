"""The outbox: messages written in the same transaction as the state change
that causes them, relayed to the message broker afterwards with confirms."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, delete, insert, select

from broker.messaging.publisher import Outgoing
from broker.store.clock import now
from broker.store.schema import outbox


class _Writes:
    """How many times this process has written rows to the outbox (committed or not)."""

    count = 0


_writes = _Writes()


def last_put() -> int:
    """A number that grows each time this process writes to the outbox."""
    return _writes.count


def put(conn: Connection, messages: Iterable[Outgoing]) -> None:
    """Queue messages for the relay, inside the caller's transaction."""
    rows = [
        {
            "exchange": m.exchange,
            "routing_key": m.routing_key,
            "mandatory": m.mandatory,
            "body": m.body.decode(),
            "created_at": now(),
        }
        for m in messages
    ]
    if rows:
        conn.execute(insert(outbox), rows)
        _writes.count += 1


def take(conn: Connection, limit: int) -> list[tuple[int, Outgoing]]:
    """The oldest messages, locked so another broker process skips them."""
    stmt = select(outbox).order_by(outbox.c.id).limit(limit)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    return [
        (r.id, Outgoing(r.exchange, r.routing_key, r.body.encode(), mandatory=r.mandatory))
        for r in conn.execute(stmt)
    ]


def remove(conn: Connection, ids: list[int]) -> None:
    """Forget messages that the broker has confirmed."""
    if ids:
        conn.execute(delete(outbox).where(outbox.c.id.in_(ids)))
