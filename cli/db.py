"""``pandamq db``: schema migrations."""

from __future__ import annotations

import click

from broker.store.engine import open_engine
from broker.store.migrate import upgrade
from cli.context import connection_options, settings


@click.group()
def db() -> None:
    """Manage the SQL database."""


@db.command("upgrade")
@connection_options
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Create or migrate the schema to the newest version (safe to repeat)."""
    engine = open_engine(settings(ctx).database_url)
    try:
        revision = upgrade(engine)
    finally:
        engine.dispose()
    click.echo(f"database at schema {revision}")
