"""``pandamq serve``: run the services."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

import click

from broker.service.server import BrokerService
from broker.store.engine import open_engine
from cli.context import connection_options, settings, setup_logging
from ddm_bridge.bridge import DDMBridge


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, for a graceful stop."""
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


@click.command()
@click.argument("service", type=click.Choice(["broker", "ddm", "all"]), default="all")
@click.option("--log-level", default=None, help="DEBUG, INFO, WARNING, ... (PANDAMQ_LOG_LEVEL).")
@connection_options
@click.pass_context
def serve(ctx: click.Context, service: str, log_level: str | None) -> None:
    """Run pandamq services until SIGTERM or SIGINT (`all`: every service there is)."""
    s = settings(ctx, log_level=log_level)
    setup_logging(s.log_level)
    stop = stop_on_signals()
    # Not `database(s)`: the service checks the schema itself, once the database is up.
    engine = open_engine(s.database_url, create=False)
    runs = {
        "broker": lambda: BrokerService(s, engine).run(stop),
        "ddm": lambda: DDMBridge(s, engine).run(stop),
    }
    chosen = list(runs) if service == "all" else [service]
    threads = [
        threading.Thread(target=_then_stop(runs[name], stop), name=name) for name in chosen[1:]
    ]
    for thread in threads:
        thread.start()
    try:
        runs[chosen[0]]()
    finally:
        stop.set()  # one service ending stops the others
        for thread in threads:
            thread.join()


def _then_stop(run: Callable[[], None], stop: threading.Event) -> Callable[[], None]:
    """``run``, then stop the other services, however it ended."""

    def target() -> None:
        try:
            run()
        finally:
            stop.set()

    return target
