"""``pandamq serve``: run the services."""

from __future__ import annotations

import signal
import threading

import click

from broker.service.server import BrokerService
from broker.store.engine import open_engine
from cli.context import connection_options, settings, setup_logging


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, for a graceful stop."""
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


@click.command()
@click.argument("service", type=click.Choice(["broker", "all"]), default="all")
@click.option("--log-level", default=None, help="DEBUG, INFO, WARNING, ... (PANDAMQ_LOG_LEVEL).")
@connection_options
@click.pass_context
def serve(ctx: click.Context, service: str, log_level: str | None) -> None:
    """Run pandamq services until SIGTERM or SIGINT (`all`: every service there is)."""
    s = settings(ctx, log_level=log_level)
    setup_logging(s.log_level)
    stop = stop_on_signals()
    # Not `database(s)`: the service checks the schema itself, once the database is up.
    BrokerService(s, open_engine(s.database_url, create=False)).run(stop)
