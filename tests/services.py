"""The machine's RabbitMQ and PostgreSQL, with a private vhost and database per test session."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import psycopg

RABBITMQ_HOST = "127.0.0.1:5672"
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@contextmanager
def rabbitmq_vhost() -> Iterator[str]:
    """A new vhost for guest; yields its amqp:// URL; deletes it afterwards."""
    vhost = f"pandamq-test-{uuid.uuid4().hex[:10]}"
    _rabbitmqctl("add_vhost", vhost)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@{RABBITMQ_HOST}/{vhost}"
    finally:
        _rabbitmqctl("delete_vhost", vhost)


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new database; yields its SQLAlchemy URL; drops it afterwards."""
    name = f"pandamq_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        drop_database(name)


def drop_database(name: str) -> None:
    """Drop a database if it is there, whoever is connected to it."""
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def delete_vhost(vhost: str) -> None:
    """Delete a vhost if it is there."""
    subprocess.run(
        ["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True, timeout=60, check=False
    )


@contextmanager
def rabbitmq_user(broker_url: str, name: str) -> Iterator[str]:
    """A RabbitMQ user ``name`` with every permission on ``broker_url``'s vhost; yields
    that URL with the user's login; deletes the user afterwards."""
    parts = urlsplit(broker_url)
    vhost = unquote(parts.path.lstrip("/")) or "/"
    password = uuid.uuid4().hex
    _rabbitmqctl("add_user", name, password)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, name, ".*", ".*", ".*")
        yield urlunsplit(
            parts._replace(netloc=f"{quote(name)}:{password}@{parts.hostname}:{parts.port}")
        )
    finally:
        subprocess.run(
            ["rabbitmqctl", "-q", "delete_user", name], capture_output=True, timeout=60, check=False
        )
