"""The site catalogue."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, select

from broker.errors import BadInput
from broker.protocol import NAME_PATTERN
from broker.store.clock import iso_times, now
from broker.store.schema import sites

SITE_STATUSES = ("online", "offline", "brokeroff", "test")


def add_site(conn: Connection, name: str, status: str = "online") -> bool:
    """Add a site; return False if it was already there (nothing changes then)."""
    if not NAME_PATTERN.match(name):
        raise BadInput(f"site name {name!r} must be 1-64 letters, digits, '_', '.' or '-'")
    if status not in SITE_STATUSES:
        raise BadInput(f"site status must be one of {', '.join(SITE_STATUSES)}, got {status!r}")
    if conn.execute(select(sites.c.name).where(sites.c.name == name)).first():
        return False
    conn.execute(sites.insert().values(name=name, status=status, created_at=now()))
    return True


def list_sites(conn: Connection) -> list[dict[str, Any]]:
    """Every site, by name."""
    rows = conn.execute(select(sites).order_by(sites.c.name)).mappings()
    return [iso_times(dict(r)) for r in rows]


def known_sites(conn: Connection, names: Iterable[str]) -> dict[str, str]:
    """Status of each of ``names`` that is in the catalogue."""
    wanted = set(names)
    if not wanted:
        return {}
    rows = conn.execute(select(sites.c.name, sites.c.status).where(sites.c.name.in_(wanted)))
    return {r.name: r.status for r in rows}


def online_sites(conn: Connection) -> list[str]:
    """Names of sites that take new work."""
    rows = conn.execute(select(sites.c.name).where(sites.c.status == "online"))
    return sorted(r.name for r in rows)
