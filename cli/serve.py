"""``pandamq serve``: run the services."""

from __future__ import annotations

import click

from broker.service.server import BrokerService
from broker.stopping import stop_on_signals
from broker.store.engine import open_engine
from cli.context import connection_options, settings, setup_logging
from cli.factory import start_factory


@click.command()
@click.argument("service", type=click.Choice(["broker", "all"]), default="all")
@click.option("--log-level", default=None, help="DEBUG, INFO, WARNING, ... (PANDAMQ_LOG_LEVEL).")
@connection_options
@click.pass_context
def serve(ctx: click.Context, service: str, log_level: str | None) -> None:
    """Run services until SIGTERM or SIGINT; `all` adds the factory if factory_sites is set."""
    s = settings(ctx, log_level=log_level)
    setup_logging(s.log_level)
    stop = stop_on_signals()
    # Not `database(s)`: the service checks the schema itself, once the database is up.
    factory = start_factory(s, stop) if service == "all" else None
    BrokerService(s, open_engine(s.database_url, create=False)).run(stop)
    if factory is not None:
        factory.join()
