"""Timestamps: always timezone-aware UTC, also when SQLite hands back naive ones."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


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
