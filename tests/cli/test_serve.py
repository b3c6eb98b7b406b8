"""``pandamq serve`` ends with one error line, whichever of its services failed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from broker.store.migrate import head_revision
from tests.cli.processes import PANDAMQ


def serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``pandamq serve ARGS`` to its end, in ``tmp_path``, with no ``PANDAMQ_*`` settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PANDAMQ_")}
    return subprocess.run(
        [PANDAMQ, "serve", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("service", ["broker", "ddm", "all"])
def test_serve_on_a_database_without_its_schema_prints_one_line(
    service: str, tmp_path: Path
) -> None:
    # Given a database file with no schema in it
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    # When a service is started on it
    done = serve(tmp_path, service, "--broker-url=memory://", f"--database-url=sqlite:///{empty}")
    # Then it ends with one error line that says what to do, and no traceback
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    schema = f"is at schema none, not {head_revision()}: run `pandamq db upgrade`"
    assert errors == [f"pandamq: error: database sqlite:///{empty} {schema}"], done.stderr
