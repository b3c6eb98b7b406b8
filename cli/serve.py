"""``pandamq serve``: run the services."""

from __future__ import annotations

import threading
from collections.abc import Callable

import click

from broker.observability.exporter import serve_metrics
from broker.service.server import BrokerService
from broker.settings import Settings
from broker.stopping import stop_on_signals
from broker.store.engine import open_engine
from cli.context import connection_options, database, settings, setup_logging
from cli.factory import start_factory
from cli.monitor import start_monitor, stop_monitor
from ddm_bridge.bridge import DDMBridge


@click.command()
@click.argument("service", type=click.Choice(["broker", "ddm", "monitor", "all"]), default="all")
@click.option("--log-level", default=None, help="DEBUG, INFO, WARNING, ... (PANDAMQ_LOG_LEVEL).")
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve Prometheus /metrics on this port; 0: off (PANDAMQ_METRICS_PORT).",
)
@click.option(
    "--monitor/--no-monitor",
    "with_monitor",
    default=False,
    help="With `all`: serve the web monitor too.",
)
@click.option("--host", default=None, help="Web monitor address (PANDAMQ_MONITOR_HOST).")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Web monitor port (PANDAMQ_MONITOR_PORT, default 8080).",
)
@connection_options
@click.pass_context
def serve(
    ctx: click.Context,
    service: str,
    log_level: str | None,
    metrics_port: int | None,
    with_monitor: bool,
    host: str | None,
    port: int | None,
) -> None:
    """Run pandamq services until SIGTERM or SIGINT (`all`: the broker service and the
    DDM bridge, the pilot factory if factory_sites is set, the web monitor with --monitor)."""
    s = settings(
        ctx,
        log_level=log_level,
        metrics_port=metrics_port,
        monitor_host=host,
        monitor_port=port,
    )
    setup_logging(s.log_level, s.log_format)
    stop = stop_on_signals()
    monitor = start_monitor(s, database(s)) if service == "monitor" or with_monitor else None
    factory = start_factory(s, stop) if service == "all" else None
    try:
        if service == "monitor":
            while not stop.wait(0.5):
                pass
        else:
            _run_services(s, service, stop)
    finally:
        stop.set()
        if monitor is not None:
            stop_monitor(monitor)
        if factory is not None:
            factory.join()


def _run_services(s: Settings, service: str, stop: threading.Event) -> None:
    """The broker service, the DDM bridge or both (``all``), one per thread; the first
    to end stops the others."""
    # Not `database(s)`: the services check the schema themselves, once the database is up.
    engine = open_engine(s.database_url, create=False)
    serve_metrics(s, engine)
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
