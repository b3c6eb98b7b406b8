"""Timestamps: always timezone-aware UTC, also when SQLite hands back naive ones."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, String
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement


def now() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """``value`` as aware UTC; SQLite drops the zone, so naive means UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def iso(value: datetime) -> str:
    """``value`` as an ISO 8601 UTC string."""
    return as_utc(value).isoformat()


def iso_times(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with every datetime value as an ISO 8601 UTC string, for people and JSON."""
    for key, value in record.items():
        if isinstance(value, datetime):
            record[key] = as_utc(value).isoformat()
    return record


class IsoUtc(FunctionElement[str]):
    """A time column read as an ISO 8601 UTC string that the database writes: a page
    of 1,000 jobs has 2,000 times, and turning each into a datetime and back into a
    string in Python took a third of the page's time."""

    type = String()
    name = "iso_utc"
    inherit_cache = True


def iso_utc(column: ColumnElement[datetime]) -> IsoUtc:
    """``column`` as an ISO 8601 UTC string (microseconds always shown)."""
    return IsoUtc(column)


@compiles(IsoUtc, "postgresql")
def _iso_utc_postgresql(element: IsoUtc, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.clauses, **kw)
    return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')"


@compiles(IsoUtc, "sqlite")
def _iso_utc_sqlite(element: IsoUtc, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite keeps a time as the text 'YYYY-MM-DD HH:MM:SS.ffffff', in UTC here.
    column = compiler.process(element.clauses, **kw)
    return f"replace({column}, ' ', 'T') || '+00:00'"
