"""``pandamq sites``: the site catalogue."""

from __future__ import annotations

import click

from broker.store.engine import transaction
from broker.store.sites import SITE_STATUSES, add_site, list_sites
from cli.context import connection_options, database, settings
from cli.render import print_json, print_table


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
        print_table(rows, ["name", "status", "created_at"])


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
