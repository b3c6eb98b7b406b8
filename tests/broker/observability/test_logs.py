"""Log lines as JSON objects carrying the job, task, site and pilot."""

from __future__ import annotations

import json
import logging

import pytest

from broker.observability.logs import JSONFormatter, job_context


def record(**extra: object) -> logging.LogRecord:
    r = logging.LogRecord(
        "broker.test", logging.WARNING, __file__, 1, "job %s failed", ("j1",), None
    )
    r.__dict__.update(extra)
    return r


def test_a_json_line_carries_the_context_given() -> None:
    line = JSONFormatter().format(record(**job_context(job_id="j1", site="SITE_A", pilot_id=None)))
    entry = json.loads(line)
    assert entry["message"] == "job j1 failed" and entry["level"] == "WARNING"
    assert entry["job_id"] == "j1" and entry["site"] == "SITE_A"
    assert "pilot_id" not in entry and entry["time"].endswith("+00:00")


def test_unknown_context_fields_are_a_mistake() -> None:
    with pytest.raises(ValueError, match="queue"):
        job_context(queue="x")
