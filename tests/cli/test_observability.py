"""``pandamq serve`` with /metrics, the web monitor and JSON logs, as an operator runs it."""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.cli.processes import Pandamq, pandamq_processes
from tests.harness import wait_for

pytestmark = pytest.mark.services


@pytest.fixture
def processes(services: tuple[str, str], tmp_path: Path) -> Iterator[Pandamq]:
    with pandamq_processes(services, tmp_path) as p:
        yield p


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
        return body.decode()


def finished_at(metrics_url: str, site: str) -> float:
    for family in text_string_to_metric_families(get(metrics_url)):
        for s in family.samples:
            if s.name == "pandamq_job_transitions_total" and s.labels == {
                "site": site,
                "from_state": "holding",
                "to_state": "finished",
            }:
                return s.value
    return 0.0


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.timeout(120)
def test_serve_exports_metrics_serves_the_monitor_and_logs_json(processes: Pandamq) -> None:
    # Given `serve` with metrics and the monitor, and a pilot, both logging JSON
    metrics, monitor = free_port(), free_port()
    site = processes.new_site()
    serve = processes.start(
        "--log-format",
        "json",
        "serve",
        "--metrics-port",
        str(metrics),
        "--monitor",
        "--port",
        str(monitor),
    )
    pilot = processes.start("pilot", "--site", site, env={"PANDAMQ_LOG_FORMAT": "json"})
    # When three jobs run
    ids = processes.submit([{"command": "true", "site": site} for _ in range(3)])
    processes.wait_states(ids, ["finished"] * 3)
    # Then /metrics counts them at their site, and the monitor's JSON agrees with SQL
    url = f"http://127.0.0.1:{metrics}/metrics"
    wait_for(lambda: finished_at(url, site) == 3, what="metrics of 3 finished jobs")
    dashboard = json.loads(get(f"http://127.0.0.1:{monitor}/api/"))
    (row,) = [r for r in dashboard["sites"] if r["site"] == site]
    assert row["counts"] == {"finished": 3}
    assert "<title>Sites - pandamq</title>" in get(f"http://127.0.0.1:{monitor}/")
    # And every log line is a JSON object; the pilot's carry its id and site
    assert [p.stop() for p in (pilot, serve)] == [0, 0], processes.logs()
    assert any(e["message"].startswith("monitor on") for e in json_lines(serve.log()))
    pilot_lines = json_lines(pilot.log())
    assert any(e.get("site") == site and e.get("pilot_id") for e in pilot_lines), pilot_lines
