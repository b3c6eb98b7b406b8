"""The Prometheus endpoint of a pandamq service (broker, DDM bridge): ``/metrics``.

Counters and histograms of this process, process metrics (CPU, memory, open
files), and the SQL gauges. Any service calls :func:`serve_metrics` once.
"""

from __future__ import annotations

import logging
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, start_http_server
from sqlalchemy import Engine

from broker.errors import ConfigError
from broker.observability.gauges import SQLGauges
from broker.settings import Settings

log = logging.getLogger(__name__)

_gauges: list[SQLGauges] = []


def serve_metrics(settings: Settings, engine: Engine) -> WSGIServer | None:
    """Serve ``/metrics`` on ``settings.metrics_port`` in a thread; None when it is 0 (off)."""
    if settings.metrics_port == 0:
        return None
    register_gauges(settings, engine)
    try:
        server, _thread = start_http_server(settings.metrics_port, addr="0.0.0.0")
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on port {settings.metrics_port}: {exc.strerror}"
        ) from exc
    log.info("metrics on http://0.0.0.0:%d/metrics", settings.metrics_port)
    return server


def register_gauges(settings: Settings, engine: Engine) -> None:
    """Put the SQL gauges of ``engine``'s database in the default registry (one per process)."""
    while _gauges:
        REGISTRY.unregister(_gauges.pop())
    _gauges.append(SQLGauges(engine, settings.metrics_refresh_s, settings.pilot_seen_s))
    REGISTRY.register(_gauges[0])
