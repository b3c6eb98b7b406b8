"""Sites left out, as the monitor shows them: each status other than ``online`` with who
set it, why, since when and until when, and the tasks a site is left out for."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from broker.brokerage.exclusion import AUTOMATIC, ExclusionPolicy, task_exclusion, when
from broker.errors import NotFound
from broker.store.clock import as_utc
from broker.store.site_status import site_task_outcomes, status_history, statuses


def left_out(conn: Connection, t: datetime) -> list[dict[str, Any]]:
    """Every site whose status is not ``online``, with until when."""
    return [_described(row, t) for row in statuses(conn) if row["status"] != "online"]


def site_page(conn: Connection, name: str, policy: ExclusionPolicy, t: datetime) -> dict[str, Any]:
    """A site's status, its history, and the tasks it is left out for now."""
    row = next((r for r in statuses(conn) if r["name"] == name), None)
    if row is None:
        raise NotFound(f"no site {name!r}")
    outcomes = site_task_outcomes(conn, name, t - timedelta(seconds=policy.window_s))
    reasons = {task: task_exclusion(task, o, policy) for task, o in sorted(outcomes.items())}
    return {
        **_described(row, t),
        "history": status_history(conn, name),
        "tasks_left_out": [{"task_id": k, "reason": r} for k, r in reasons.items() if r],
    }


def _described(row: dict[str, Any], t: datetime) -> dict[str, Any]:
    described = {k: _shown(v) for k, v in row.items()}
    return {**described, "until": until(row, t)}


def until(row: dict[str, Any], t: datetime) -> str | None:
    """When a site's status ends, in words (None: ``online``)."""
    if row["status"] == "online":
        return None
    if row["status"] != "test" or row["status_by"] != AUTOMATIC:
        return "until an operator sets it online"
    probe_at = as_utc(row["probe_at"]) if row["probe_at"] else None
    if probe_at is not None and probe_at > t:
        return f"next probe jobs from {when(probe_at)}; online once a probe job finishes"
    return "online once a probe job finishes"


def _shown(value: Any) -> Any:
    return when(as_utc(value)) if isinstance(value, datetime) else value
