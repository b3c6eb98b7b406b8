"""docs/client.md's example runs as it is written, against a running system."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.harness import System

DOC = Path(__file__).resolve().parents[2] / "docs" / "client.md"


def test_the_client_example_runs(
    system: System, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a running broker service and a pilot for SITE_A, and no database URL
    system.add_site("SITE_A")
    system.start_broker()
    system.start_pilot("SITE_A")
    monkeypatch.setenv("PANDAMQ_BROKER_URL", system.settings.broker_url)
    monkeypatch.setenv("PANDAMQ_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:1/x")
    monkeypatch.delenv("PANDAMQ_CONFIG", raising=False)
    monkeypatch.chdir(Path(system.settings.work_dir).parent)
    (code,) = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    # When the example runs
    exec(compile(code, str(DOC), "exec"), {})
    # Then it printed each ending and the first job's output
    out = capsys.readouterr().out
    assert out.count(" finished\n") == 3
    assert "event 0\n" in out
