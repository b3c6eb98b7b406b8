"""Leases in SQL: which process holds a duty of periodic work, and until when.

A lease is a row per duty (``watchdog``, ``factory:local:SITE``): its holder, the
time it is held until, and how many times it was taken. Taking a lease is a
compare-and-set on that row in a short transaction of its own, never held
while the duty runs: the row is free once ``until`` has passed, so a holder
that dies frees its duties by itself, and no process ever waits for another.
On PostgreSQL the row is read ``FOR UPDATE SKIP LOCKED``: a process finding
another one taking the same lease at that instant counts it as taken. Works
on SQLite too (its writers take turns).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import Connection, select, update
from sqlalchemy.dialects import postgresql, sqlite

from broker.store.clock import as_utc
from broker.store.schema import leases


def take(
    conn: Connection,
    name: str,
    holder: str,
    at: datetime,
    until: datetime,
    renew: bool = False,
    period_s: float | None = None,
) -> bool:
    """Take lease ``name`` for ``holder`` until ``until`` if it is free at ``at`` (with
    ``renew``: or held by ``holder`` already; with ``period_s``: or given back that long
    ago, whatever time its last holder gave it back until); whether it was taken."""
    free = leases.c.until <= at
    if renew:
        free = free | (leases.c.holder == holder)
    if period_s is not None:
        # A process with a shorter period than the last holder's (a deployment's
        # settings changing, one process at a time) need not wait for the longer one.
        ended = leases.c.given_at.is_not(None) & (leases.c.given_at >= leases.c.taken_at)
        free = free | (ended & (leases.c.given_at <= at - timedelta(seconds=period_s)))
    stmt = select(leases.c.name).where(leases.c.name == name, free)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    if conn.execute(stmt).first() is None:
        return _first(conn, name, holder, at, until)
    conn.execute(
        update(leases)
        .where(leases.c.name == name)
        .values(holder=holder, until=until, taken_at=at, runs=leases.c.runs + 1)
    )
    return True


def _first(conn: Connection, name: str, holder: str, at: datetime, until: datetime) -> bool:
    """Take a lease no process has taken before; False if it exists (held, or being taken)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = (
        dialect.insert(leases)
        .values(name=name, holder=holder, until=until, taken_at=at, runs=1)
        .on_conflict_do_nothing(index_elements=[leases.c.name])
        .returning(leases.c.name)
    )
    return conn.execute(stmt).first() is not None


def give_back(conn: Connection, name: str, holder: str, at: datetime, until: datetime) -> bool:
    """``holder`` gives its lease ``name`` back at ``at``, keeping it only until ``until``
    (the next turn of a periodic duty); False if ``holder`` no longer held it."""
    stmt = (
        update(leases)
        .where(leases.c.name == name, leases.c.holder == holder)
        .values(until=until, given_at=at)
    )
    return bool(conn.execute(stmt).rowcount)


def let_go(conn: Connection, holder: str, at: datetime) -> int:
    """Free every lease ``holder`` holds (it stops); how many."""
    stmt = update(leases).where(leases.c.holder == holder, leases.c.until > at).values(until=at)
    return int(conn.execute(stmt).rowcount or 0)


class Lease(NamedTuple):
    """One lease as stored."""

    holder: str
    until: datetime
    runs: int
    taken_at: datetime


def held(conn: Connection, prefix: str = "") -> dict[str, Lease]:
    """Every lease (whose name starts with ``prefix``), by name."""
    stmt = select(leases).where(leases.c.name.startswith(prefix, autoescape=True))
    return {
        r.name: Lease(r.holder, as_utc(r.until), r.runs, as_utc(r.taken_at))
        for r in conn.execute(stmt)
    }
