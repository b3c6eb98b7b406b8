"""``pandamq datasets`` and ``pandamq dataset NAME``: data in the catalogue, read
through the broker service; ``datasets add`` and ``register`` are an operator's
(they write to the storage elements and the database)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click
from rich.console import Console

from broker.errors import UnknownSite
from broker.settings import Settings
from broker.store.engine import transaction
from broker.store.sites import known_sites
from cli.context import client, connection_options, database, settings
from cli.render import print_json, print_table, table
from ddm_bridge import catalogue
from ddm_bridge.backend import DDMBackend
from ddm_bridge.backends import open_backend

LIST_COLUMNS = ["name", "kind", "state", "files", "site", "task_id", "modified_at"]
SUBSCRIPTION_COLUMNS = [
    "dataset",
    "site",
    "state",
    "files_done",
    "files_total",
    "attempts",
    "created_at",
    "ended_at",
    "error",
]


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@connection_options
@click.pass_context
def datasets(ctx: click.Context, as_json: bool) -> None:
    """List datasets, or add files to one with a subcommand."""
    if ctx.invoked_subcommand is not None:
        return
    rows = client(ctx).datasets()
    if as_json:
        print_json(rows)
    else:
        print_table(rows, LIST_COLUMNS)


def _files_command(
    ctx: click.Context, site: str, action: Callable[[DDMBackend, Settings], int]
) -> int:
    s = settings(ctx)
    engine = database(s)
    with transaction(engine) as conn:
        if site not in known_sites(conn, [site]):
            raise UnknownSite(f"site {site!r} is not in the site catalogue")
    backend = open_backend(s, engine)
    try:
        return action(backend, s)
    finally:
        backend.stop()


@datasets.command("add")
@click.argument("name")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--site", required=True, help="Site whose SE gets the copies.")
@click.option("--scope", default="user", show_default=True, help="Scope of the files' DIDs.")
@connection_options
@click.pass_context
def datasets_add(
    ctx: click.Context, name: str, paths: tuple[str, ...], site: str, scope: str
) -> None:
    """Copy local files onto a site's SE and register them in dataset NAME."""
    added = _files_command(
        ctx,
        site,
        lambda b, s: catalogue.add(b, s.ddm_root, name, site, scope, [Path(p) for p in paths]),
    )
    click.echo(f"dataset {name}: {added} file(s) added at {site}")


@datasets.command("register")
@click.argument("name")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--site", required=True, help="Site whose SE holds the files.")
@connection_options
@click.pass_context
def datasets_register(ctx: click.Context, name: str, paths: tuple[str, ...], site: str) -> None:
    """Register files already on a site's SE (<SE>/<scope>/<name>) in dataset NAME."""
    added = _files_command(
        ctx,
        site,
        lambda b, s: catalogue.register(b, s.ddm_root, name, site, [Path(p) for p in paths]),
    )
    click.echo(f"dataset {name}: {added} file(s) registered at {site}")


@click.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@connection_options
@click.pass_context
def dataset(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show one dataset: its files, the sites with a replica of each, and the
    subscriptions moving them (its own, and those of dispatch datasets holding its files)."""
    record = client(ctx).dataset(name)
    if as_json:
        print_json(record)
        return
    console = Console(width=200)
    for key in ("name", "kind", "state", "task_id", "site", "created_at", "closed_at"):
        if record.get(key) is not None:
            console.print(f"[bold]{key:>10}[/bold]  {record[key]}", highlight=False)
    files = [{**f, "sites": ", ".join(f["sites"])} for f in record["files"]]
    console.print(table(files, ["did", "size", "adler32", "sites"], title="files"))
    console.print(table(record["subscriptions"], SUBSCRIPTION_COLUMNS, title="subscriptions"))
