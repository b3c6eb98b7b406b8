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
from cli.factory import new_factory
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
    # The monitor only reads: it may read a replica (database_replica_url).
    monitor = (
        start_monitor(s, database(s, s.reading_url()))
        if service == "monitor" or with_monitor
        else None
    )
    services = Services(stop)
    try:
        if service != "monitor":
            _start_services(services, s, service, stop)
        services.wait()
    finally:
        services.join()
        if monitor is not None:
            stop_monitor(monitor)
    services.raise_first()


def _start_services(services: Services, s: Settings, service: str, stop: threading.Event) -> None:
    """The broker service, the DDM bridge or both (``all``, with the pilot factory if
    ``factory_sites`` is set), one thread each."""
    # Not `database(s)`: the services check the schema themselves, once the database is up.
    engine = open_engine(s.database_url, create=False)
    serve_metrics(s, engine)
    factory = new_factory(s) if service == "all" else None
    runs: dict[str, Callable[[], None]] = {
        "broker": lambda: BrokerService(s, engine).run(stop),
        "ddm": lambda: DDMBridge(s, engine).run(stop),
    }
    for name in list(runs) if service == "all" else [service]:
        services.start(name, runs[name])
    if factory is not None:
        services.start("pilot-factory", lambda: factory.run(stop))


class Services:
    """Services side by side, one thread each: the first to end stops the others, and
    the first error any of them raised is raised once all have ended."""

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []

    def start(self, name: str, run: Callable[[], None]) -> None:
        """Run ``run`` in a thread of its own."""
        thread = threading.Thread(target=self._until_stopped(run), name=name)
        self._threads.append(thread)
        thread.start()

    def wait(self) -> None:
        """Wait for ``stop``: a signal, or a service that ended."""
        while not self._stop.wait(0.5):
            pass

    def join(self) -> None:
        """Stop every service and wait for its thread to end."""
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def raise_first(self) -> None:
        """Raise the first error a service ended with, so that the command ends with its
        one line and exit code whichever thread it came from."""
        if self._errors:
            raise self._errors[0]

    def _until_stopped(self, run: Callable[[], None]) -> Callable[[], None]:
        def target() -> None:
            try:
                run()
            except BaseException as exc:
                # Kept for the main thread: a thread's own traceback would precede the error line.
                self._errors.append(exc)
            finally:
                self._stop.set()  # one service ending stops the others

        return target
