"""Open a kombu connection from settings; turn connection failures into ours."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from kombu import Connection

from broker.errors import BrokerRefused, BrokerUnavailable
from broker.messaging import tls
from broker.settings import Settings

#: The memory transport polls its queues; keep the demo's latency low.
MEMORY_POLLING_INTERVAL_S = 0.005


def is_memory(url: str) -> bool:
    """True for the in-process transport (one process only)."""
    return url.startswith("memory://")


@contextmanager
def broker_errors(connection: Connection, doing: str) -> Iterator[None]:
    """Turn kombu and py-amqp errors raised while ``doing`` something into ours."""
    try:
        yield
    except connection.channel_errors as exc:
        raise BrokerRefused(f"the message broker refused {doing}: {exc}") from exc
    except (*connection.connection_errors, OSError) as exc:
        raise BrokerUnavailable(f"lost the message broker while {doing}: {exc}") from exc


def connect(settings: Settings, heartbeat: int = 0, timeout_s: float = 10.0) -> Connection:
    """An open connection to the message broker, or ``BrokerUnavailable``."""
    conn = _build(settings, heartbeat, timeout_s)
    try:
        _open(conn, settings)
    except BaseException:
        # Drop the half-open connection now, not in a destructor at some later time.
        conn.collect()
        raise
    return conn


def _open(conn: Connection, settings: Settings) -> None:
    where = shown(settings.broker_url)
    try:
        # One attempt: kombu's connect() retries once after 2 s; callers choose their backoff.
        conn.ensure_connection(max_retries=0, reraise_as_library_errors=False)
    except conn.channel_errors as exc:
        raise BrokerRefused(
            f"the message broker at {where} refused the connection: {exc}; "
            "check the user and password (or certificate) and the vhost"
        ) from exc
    except (*conn.connection_errors, OSError) as exc:
        raise tls.explain(exc, settings, where) or BrokerUnavailable(
            f"cannot reach the message broker at {where}: {exc or type(exc).__name__}; "
            "check that RabbitMQ is running and PANDAMQ_BROKER_URL is right"
            + tls.plain_on_tls_hint(settings.broker_url, exc)
        ) from exc


def shown(url: str) -> str:
    """A broker URL fit for a log line: no password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":**@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _build(settings: Settings, heartbeat: int, timeout_s: float) -> Connection:
    url = settings.broker_url
    if is_memory(url):
        return Connection(url, transport_options={"polling_interval": MEMORY_POLLING_INTERVAL_S})
    url = url.replace("amqps://", "amqp://", 1) if url.startswith("amqps://") else url
    options: dict[str, Any] = {"heartbeat": heartbeat, "connect_timeout": timeout_s}
    if settings.broker_url.startswith("amqps://"):
        options["ssl"] = tls.options(settings)
        if settings.tls_cert:
            options["login_method"] = "EXTERNAL"
    return Connection(url, **options)
