"""``pandamq sites``: the site catalogue."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from broker.brokerage.catalogue import SITE_STATUSES, read_catalogue
from broker.security import identity
from broker.store.engine import transaction
from broker.store.sites import add_site, apply_catalogue, list_sites, set_status
from cli.context import connection_options, database, settings
from cli.render import print_json, print_table

COLUMNS = [
    "name",
    "status",
    "status_by",
    "status_reason",
    "se",
    "slots",
    "max_walltime_s",
    "releases",
    "max_queued",
]


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@connection_options
@click.pass_context
def sites(ctx: click.Context, as_json: bool) -> None:
    """List sites, or manage them with a subcommand."""
    if ctx.invoked_subcommand is not None:
        return
    with transaction(database(settings(ctx))) as conn:
        rows = list_sites(conn)
    if as_json:
        print_json(rows)
    else:
        print_table([_readable(r) for r in rows], COLUMNS)


def _readable(row: dict[str, Any]) -> dict[str, Any]:
    """Slots and releases in a few words each, for the table."""
    slots = row.get("slots")
    return {
        **row,
        "slots": "any" if slots is None else ", ".join(_slot(s) for s in slots),
        "releases": ", ".join(row.get("releases") or []),
    }


def _slot(slot: dict[str, Any]) -> str:
    return f"{slot['resource_type']} {slot['cores']}c/{slot['memory_mb']}MB"


@sites.command("add")
@click.argument("name")
@click.option("--status", type=click.Choice(SITE_STATUSES), default="online", show_default=True)
@connection_options
@click.pass_context
def sites_add(ctx: click.Context, name: str, status: str) -> None:
    """Add a site to the catalogue (nothing changes if it is there)."""
    with transaction(database(settings(ctx))) as conn:
        added = add_site(conn, name, status)
    click.echo(f"site {name} {'added' if added else 'already in the catalogue'}")


@sites.command("apply")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@connection_options
@click.pass_context
def sites_apply(ctx: click.Context, file: Path) -> None:
    """Make the catalogue say what FILE (sites.toml) says; applying it again changes nothing."""
    configs = read_catalogue(file)
    s = settings(ctx)
    with transaction(database(s)) as conn:
        outcome = apply_catalogue(conn, configs, by=identity.of(s))
    for name, what in outcome.items():
        click.echo(f"site {name} {what}")


@sites.command("set-status")
@click.argument("name")
@click.argument("status", type=click.Choice(SITE_STATUSES))
@click.option("--reason", help="Why, shown with the status (`pandamq sites`, the monitor).")
@connection_options
@click.pass_context
def sites_set_status(ctx: click.Context, name: str, status: str, reason: str | None) -> None:
    """Set a site's status (offline: its queued jobs are brokered elsewhere); the
    automatic rule leaves a status set here as it is, except online."""
    s = settings(ctx)
    with transaction(database(s)) as conn:
        before = set_status(conn, name, status, by=identity.of(s), reason=reason)
    click.echo(f"site {name}: {before} -> {status}")
