"""PanDA's error list: failed attempts grouped by error code and diagnostic.

SQL groups by the exact diagnostic; texts that differ only in numbers (ages,
sizes, pids) are then merged, so "in holding for 3601 s" and "in holding for
3710 s" are one line with both counts.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from broker.error_codes import DESCRIPTIONS, ErrorFamily
from broker.monitor.queries import error_groups

#: How many example jobs each line of the error list names.
EXAMPLES = 3

_NUMBER = re.compile(r"\d+")


def error_list(conn: Connection, since: datetime, site: str | None = None) -> list[dict[str, Any]]:
    """One entry per (family, code, exit code, diagnostic), most frequent first."""
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    for group in error_groups(conn, since, site):
        key = (
            group["error_family"],
            group["error_code"],
            group["exit_code"],
            _pattern(group["diagnostic"]),
        )
        entry = merged.setdefault(key, _entry(group))
        entry["count"] += group["count"]
        for job_id in (group["first_job"], group["last_job"]):
            if job_id not in entry["example_jobs"] and len(entry["example_jobs"]) < EXAMPLES:
                entry["example_jobs"].append(job_id)
    return sorted(merged.values(), key=lambda e: (-e["count"], str(e["error_code"])))


def _pattern(diagnostic: str | None) -> str:
    return _NUMBER.sub("N", diagnostic or "")


def _entry(group: dict[str, Any]) -> dict[str, Any]:
    return {
        "error_family": group["error_family"],
        "error_code": group["error_code"],
        "exit_code": group["exit_code"],
        "description": _description(group["error_family"], group["error_code"]),
        "diagnostic": group["diagnostic"] or "",
        "count": 0,
        "example_jobs": [],
    }


def _description(family: str | None, code: int | None) -> str:
    if family is None or code is None:
        return ""
    try:
        return DESCRIPTIONS.get((ErrorFamily(family), code), "")
    except ValueError:
        return ""
