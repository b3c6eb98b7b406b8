"""The web monitor as a service of ``pandamq serve``."""

from __future__ import annotations

import logging
import threading
from wsgiref.simple_server import WSGIServer

from sqlalchemy import Engine

from broker.monitor.web import monitor_server
from broker.operations.brokerage import exclusion_policy
from broker.settings import Settings

log = logging.getLogger(__name__)


def start_monitor(s: Settings, engine: Engine) -> WSGIServer:
    """Serve the monitor on ``monitor_host:monitor_port`` in a thread."""
    server = monitor_server(engine, s.monitor_host, s.monitor_port, exclusion_policy(s))
    host, port = server.server_address[:2]
    threading.Thread(target=server.serve_forever, args=(0.2,), daemon=True).start()
    log.info("monitor on http://%s:%d/", host, port)
    return server


def stop_monitor(server: WSGIServer) -> None:
    """Stop serving and close the socket."""
    server.shutdown()
    server.server_close()
    log.info("monitor stopped")
