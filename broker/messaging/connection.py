"""Open a kombu connection from settings; turn connection failures into ours."""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from kombu import Connection

from broker.errors import BrokerRefused, BrokerUnavailable, PandaMQError
from broker.messaging import tls
from broker.security import token_login
from broker.settings import Settings, broker_nodes

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
        raise refusal(connection, exc, doing) from exc
    except (*connection.connection_errors, OSError) as exc:
        raise BrokerUnavailable(f"lost the message broker while {doing}: {exc}") from exc


def refusal(connection: Connection, exc: BaseException, doing: str) -> PandaMQError:
    """RabbitMQ refused what a connection was ``doing``: for good, or, if the token it
    logged in with has expired since, until it reconnects with the renewed token file
    (RabbitMQ 3.10 keeps such a connection open but refuses its operations)."""
    expires = _token_expiry.get(connection)
    if expires is not None and expires <= time.time():
        return BrokerUnavailable(
            f"the token this connection logged in with expired while {doing}: {exc}; "
            "the next connection reads broker_token_file again"
        )
    return BrokerRefused(f"the message broker refused {doing}: {exc}")


#: When the token of each open connection that logged in with one expires.
_token_expiry: weakref.WeakKeyDictionary[Connection, float] = weakref.WeakKeyDictionary()


def connect(settings: Settings, heartbeat: int = 0, timeout_s: float = 10.0) -> Connection:
    """An open connection to the message broker, or ``BrokerUnavailable``.

    A ``broker_url`` naming several nodes of a cluster (``amqp://a/v;amqp://b/v``)
    is tried node by node, starting from the one this process reached last, so
    that a client whose node has gone moves to another at its next attempt. A
    refusal (credentials, vhost, certificate) is the same on every node and is
    raised at once; only when no node answers is the last outage raised.
    """
    nodes = broker_nodes(settings.broker_url)
    start = _last_reached.get(settings.broker_url, 0) % len(nodes)
    unreachable: BrokerUnavailable | None = None
    for n in [*range(start, len(nodes)), *range(start)]:
        conn = _build(settings, nodes[n], heartbeat, timeout_s)
        try:
            _open(conn, settings, nodes[n])
        except BrokerUnavailable as exc:
            conn.collect()
            unreachable = exc
            continue
        except BaseException:
            # Drop the half-open connection now, not in a destructor at some later time.
            conn.collect()
            raise
        _last_reached[settings.broker_url] = n
        return conn
    assert unreachable is not None
    raise unreachable


#: The node each broker URL of this process last reached.
_last_reached: dict[str, int] = {}


def _open(conn: Connection, settings: Settings, url: str) -> None:
    where = shown(url)
    try:
        # One attempt: kombu's connect() retries once after 2 s; callers choose their backoff.
        conn.ensure_connection(max_retries=0, reraise_as_library_errors=False)
    except conn.channel_errors as exc:
        raise _token_refusal(conn, settings, where, exc) or BrokerRefused(
            f"the message broker at {where} refused the connection: {exc}; "
            "check the user and password (or certificate) and the vhost"
        ) from exc
    except (*conn.connection_errors, OSError) as exc:
        raise (
            _token_refusal(conn, settings, where, exc)
            or tls.explain(exc, settings, where)
            or BrokerUnavailable(
                f"cannot reach the message broker at {where}: {exc or type(exc).__name__}; "
                "check that RabbitMQ is running and PANDAMQ_BROKER_URL is right"
                + tls.plain_on_tls_hint(url, exc)
            )
        ) from exc


def _token_refusal(
    conn: Connection, settings: Settings, where: str, exc: BaseException
) -> BrokerRefused | None:
    """Why RabbitMQ refused this connection's token, if it logged in with one and did."""
    if not settings.broker_token_file:
        return None
    return token_login.explain(
        conn.password, settings.broker_token_file, where, conn.virtual_host, exc
    )


def shown(url: str) -> str:
    """A broker URL (of one node or several) fit for a log line: no password."""
    return ";".join(_without_password(node) for node in broker_nodes(url))


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":**@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _build(settings: Settings, url: str, heartbeat: int, timeout_s: float) -> Connection:
    if is_memory(url):
        return Connection(url, transport_options={"polling_interval": MEMORY_POLLING_INTERVAL_S})
    tls_on = url.startswith("amqps://")
    url = url.replace("amqps://", "amqp://", 1) if tls_on else url
    options: dict[str, Any] = {"heartbeat": heartbeat, "connect_timeout": timeout_s}
    if tls_on:
        options["ssl"] = tls.options(settings, urlsplit(url).hostname)
        if settings.tls_cert:
            options["login_method"] = "EXTERNAL"
    if not settings.broker_token_file:
        return Connection(url, **options)
    # Read at every connection: a token renewed in the file is used at the next one.
    token = token_login.read(settings.broker_token_file)
    claims = token_login.claims_of(token, settings.broker_token_file)
    connection = Connection(url, userid=token_login.user(claims), password=token, **options)
    expires = token_login.expires(claims)
    if expires is not None:
        _token_expiry[connection] = expires
    return connection
