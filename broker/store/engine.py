"""Create the SQL engine: SQLite in WAL mode, or PostgreSQL; tell its errors apart."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from psycopg.pq import ConnStatus
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

from broker.errors import (
    ConfigError,
    DatabaseRefused,
    DatabaseUnavailable,
    PandaMQError,
    SchemaMissing,
    StatementFailed,
    TransactionConflict,
)
from broker.store import endings
from broker.store.clock import now

SQLITE_BUSY_TIMEOUT_S = 30


def open_engine(database_url: str, create: bool = True) -> Engine:
    """An engine for ``database_url``; SQLite files get WAL and immediate transactions.

    With ``create`` false, a SQLite file that does not exist is an error rather
    than a new empty database.
    """
    try:
        url = make_url(database_url)
    except ArgumentError as exc:
        raise ConfigError(f"database_url {database_url!r} is not a valid URL") from exc
    if url.get_backend_name() == "sqlite":
        path = url.database
        if not create and path and path != ":memory:" and not Path(path).exists():
            raise SchemaMissing(f"database file {path} does not exist: run `pandamq db upgrade`")
        return _sqlite_engine(database_url, path)
    return create_engine(database_url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def _sqlite_engine(database_url: str, path: str | None) -> Engine:
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        database_url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Take the write lock at BEGIN, so concurrent writers wait instead of
        # failing when a read transaction later tries to write.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """``engine.begin()``, the endings of the jobs it ended written before it commits
    (``broker.store.endings``), with a lost or unreachable database turned into
    ``DatabaseUnavailable`` (wait and retry), a deadlock or serialisation failure
    into ``TransactionConflict`` (run it again now: ``broker.conflicts``) and a
    statement the database refuses while it answers into ``StatementFailed``
    (retrying cannot help)."""
    try:
        with engine.begin() as conn:
            try:
                yield conn
                endings.flush(conn, now())
            finally:
                endings.forget(conn)
    except DBAPIError as exc:
        if _sqlstate(exc) in CONFLICT_SQLSTATES:
            raise TransactionConflict(
                f"transaction conflicted (SQLSTATE {_sqlstate(exc)}): {exc.orig}"
            ) from exc
        # A lost connection may surface as another DBAPI error; SQLAlchemy
        # marks it invalidated. Other errors, but for OperationalError, are
        # the statement's own (integrity, data), and go up as they are.
        if not isinstance(exc, OperationalError) and not exc.connection_invalidated:
            raise
        if not is_outage(exc, engine):
            where = engine.url.render_as_string()
            raise StatementFailed(f"database {where} failed a statement: {exc.orig}") from exc
        raise connection_error(exc, engine) from exc


def is_outage(exc: DBAPIError, engine: Engine) -> bool:
    """Whether an OperationalError (or a lost connection) is the database's, to wait out,
    rather than the statement's: a connection lost or never made, an error that passes,
    or a database that does not answer now."""
    return exc.connection_invalidated or _transient(exc) or not _answers(engine)


#: What PostgreSQL says when it refuses a connection for a reason waiting cannot fix,
#: and what to do about it. libpq gives no SQLSTATE for a refused connection: its text it is.
REFUSALS = (
    (
        re.compile(r'database "(?P<name>[^"]+)" does not exist'),
        "create it (`createdb {name}`, or CREATE DATABASE), then run `pandamq db upgrade`",
    ),
    (
        re.compile(r'role "(?P<name>[^"]+)" does not exist'),
        "create the user (`createuser {name}`), or correct the user in database_url",
    ),
    (
        re.compile(r"password authentication failed|no password supplied"),
        "correct the user and password in database_url (PANDAMQ_DATABASE_URL)",
    ),
    (
        re.compile(r"no pg_hba\.conf entry"),
        "let this host and user in (pg_hba.conf), or correct database_url",
    ),
)


def connection_error(exc: DBAPIError, engine: Engine) -> PandaMQError:
    """``DatabaseRefused`` for a connection the server refuses for good (no such database,
    user or password), saying what to do; else ``DatabaseUnavailable`` (wait and retry)."""
    where = engine.url.render_as_string()
    text = " ".join(str(exc.orig).split())
    for pattern, todo in REFUSALS:
        found = pattern.search(text)
        if found:
            what = found.group(0)
            return DatabaseRefused(
                f"database {where} refused the connection: {what}: "
                + todo.format(**found.groupdict())
            )
    return DatabaseUnavailable(f"cannot reach the database at {where}: {text}")


#: SQLSTATEs of a transaction the database ended because of another one: deadlock
#: detected, serialization failure.
CONFLICT_SQLSTATES = ("40P01", "40001")
#: SQLSTATE classes of errors that pass: connection lost, transaction rollback,
#: out of resources, shutdown or cancel by an operator, system errors.
TRANSIENT_SQLSTATE_CLASSES = ("08", "40", "53", "57", "58", "XX")
#: SQLite's words for a database that is busy or unreachable for now.
TRANSIENT_SQLITE_WORDS = ("locked", "busy", "disk i/o", "unable to open")


def _connection_not_made(exc: DBAPIError) -> bool:
    """Whether libpq failed to make (or keep) the connection: its error has no SQLSTATE
    but a connection whose status is not OK (a client-side error on a live connection,
    such as too many parameters, has none)."""
    pgconn = getattr(exc.orig, "pgconn", None)
    return pgconn is not None and pgconn.status != ConnStatus.OK


def _transient(exc: DBAPIError) -> bool:
    """Whether an OperationalError may pass by itself (rather than be the statement's)."""
    sqlstate = _sqlstate(exc)
    if sqlstate:
        return sqlstate[:2] in TRANSIENT_SQLSTATE_CLASSES
    if _connection_not_made(exc):
        # e.g. only a read-only standby answered a read-write URL while a replica was
        # being promoted: the next attempt, a moment later, may find the new primary.
        return True
    text = str(exc.orig).lower()
    return any(word in text for word in TRANSIENT_SQLITE_WORDS)


def _sqlstate(exc: DBAPIError) -> str:
    """The error's SQLSTATE (psycopg's), or ``""`` (SQLite has none)."""
    return str(getattr(exc.orig, "sqlstate", None) or "")


def _answers(engine: Engine) -> bool:
    """Whether the database answers a trivial query on a new connection now."""
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except DBAPIError:
        return False
    return True
