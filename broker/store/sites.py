"""The site catalogue."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update

from broker.brokerage.catalogue import SITE_STATUSES, SiteConfig
from broker.brokerage.exclusion import AUTOMATIC
from broker.errors import BadInput, NotFound
from broker.protocol import NAME_PATTERN
from broker.store.clock import iso_times, now
from broker.store.schema import sites
from broker.store.site_status import StatusChange, change_status


def add_site(conn: Connection, name: str, status: str = "online") -> bool:
    """Add a site; return False if it was already there (nothing changes then)."""
    if not NAME_PATTERN.match(name):
        raise BadInput(f"site name {name!r} must be 1-64 letters, digits, '_', '.' or '-'")
    _check_status(status)
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


def apply_catalogue(
    conn: Connection, configs: Iterable[SiteConfig], by: str | None = None
) -> dict[str, str]:
    """Make the catalogue say what ``configs`` say: each site ``added``, ``changed`` or
    ``unchanged`` (applying the same file twice changes nothing). Sites not named stay.
    A site the automatic rule put in ``test`` stays there while the file says ``online``;
    a status the file changes is recorded as set ``by`` whoever applied it."""
    configs = list(configs)
    rows = {
        r["name"]: r
        for r in conn.execute(
            select(sites).where(sites.c.name.in_([c.name for c in configs]))
        ).mappings()
    }
    t = now()
    return {c.name: _apply_one(conn, c, rows.get(c.name), by, t) for c in configs}


def _apply_one(conn: Connection, config: SiteConfig, row: Any, by: str | None, t: datetime) -> str:
    if row is None:
        conn.execute(
            sites.insert().values(
                name=config.name,
                created_at=t,
                modified_at=t,
                status_by=by,
                status_at=t,
                **config.columns(),
            )
        )
        return "added"
    wanted = _kept_status(config, row)
    if SiteConfig.from_row(row) == wanted:
        return "unchanged"
    columns = wanted.columns()
    status = columns.pop("status")
    conn.execute(update(sites).where(sites.c.name == config.name).values(modified_at=t, **columns))
    if status != row["status"]:
        _operator_status(conn, config.name, row["status"], status, by, "sites apply")
    return "changed"


def _kept_status(config: SiteConfig, row: Any) -> SiteConfig:
    """``config`` with the site's status kept when the automatic rule set it to test and
    the file still says online (the operator did not change their mind)."""
    if row["status_by"] == AUTOMATIC and config.status == "online":
        return dataclasses.replace(config, status=row["status"])
    return config


def _operator_status(
    conn: Connection, name: str, before: str, status: str, by: str | None, reason: str | None
) -> None:
    change = StatusChange(name, before, status, by, reason)
    probe_at = conn.execute(select(sites.c.probe_at).where(sites.c.name == name)).scalar()
    change_status(conn, dataclasses.replace(change, probe_at_before=probe_at), now())


def set_status(
    conn: Connection, name: str, status: str, by: str | None = None, reason: str | None = None
) -> str:
    """Set a site's status, as set ``by`` an operator (the automatic rule leaves it so);
    the status it had before."""
    _check_status(status)
    before = conn.execute(select(sites.c.status).where(sites.c.name == name)).scalar()
    if before is None:
        raise NotFound(f"no site {name!r} in the site catalogue (see `pandamq sites`)")
    _operator_status(conn, name, str(before), status, by, reason)
    return str(before)


def site_configs(conn: Connection) -> dict[str, SiteConfig]:
    """Every site of the catalogue, by name, as brokerage sees it."""
    rows = conn.execute(select(sites)).mappings()
    return {r["name"]: SiteConfig.from_row(r) for r in rows}


def _check_status(status: str) -> None:
    if status not in SITE_STATUSES:
        raise BadInput(f"site status must be one of {', '.join(SITE_STATUSES)}, got {status!r}")
