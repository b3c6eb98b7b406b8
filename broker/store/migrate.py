"""Schema migrations with Alembic: upgrade to head, or check a database is current."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from broker.errors import SchemaMissing
from broker.store import statistics
from broker.store.engine import connection_error

SCRIPT_LOCATION = "broker.store:migrations"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    return config


def head_revision() -> str:
    """The newest migration this version of pandamq knows."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def upgrade(engine: Engine) -> str:
    """Bring the database to the newest schema, with fresh planner statistics; safe to
    repeat. Returns the revision."""
    config = _config()
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
        statistics.analyse_all(engine)
    except OperationalError as exc:
        raise connection_error(exc, engine) from exc
    return head_revision()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for an empty database."""
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except OperationalError as exc:
        raise connection_error(exc, engine) from exc


def require_current(engine: Engine) -> None:
    """Raise ``SchemaMissing`` unless the database is at the newest schema."""
    current = current_revision(engine)
    if current != head_revision():
        raise SchemaMissing(
            f"database {engine.url.render_as_string()} is at schema {current or 'none'}, "
            f"not {head_revision()}: run `pandamq db upgrade`"
        )
