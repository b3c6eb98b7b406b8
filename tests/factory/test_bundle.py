"""The pilot bundle: one file that runs a pilot with nothing but python3."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from broker.factory.submitter import pilot_environment
from broker.protocol import JobSpec
from broker.settings import Settings
from cli.main import pandamq
from tests.harness import System

pytestmark = pytest.mark.services


@pytest.fixture
def system(rabbitmq_settings: Settings) -> Iterator[System]:
    """A broker service in this process, on RabbitMQ."""
    s = System(rabbitmq_settings)
    s.start_broker()
    yield s
    s.close()


def clean_venv(path: Path) -> Path:
    """A new venv without pip nor any package; its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    probe = subprocess.run([python, "-c", "import kombu"], check=False, capture_output=True)
    assert probe.returncode != 0, "the clean venv can import kombu"
    return python


def test_the_bundle_carries_the_pilot_but_no_sql(tmp_path: Path) -> None:
    # When the bundle is built with the command
    output = tmp_path / "pilot.pyz"
    result = CliRunner().invoke(pandamq, ["pilot-bundle", "-o", str(output)])
    # Then it has the pilot, its pure-Python dependencies, and nothing of SQL or the CLI
    assert result.exit_code == 0, result.output
    names = set(zipfile.ZipFile(output).namelist())
    assert {"__main__.py", "pilot_agent/agent.py", "kombu/__init__.py", "amqp/__init__.py"} <= names
    tops = {n.split("/")[0] for n in names}
    assert not tops & {"sqlalchemy", "alembic", "psycopg", "click", "cli"}, tops
    assert not any(n.startswith("broker/store/") for n in names)


@pytest.mark.timeout(120)
def test_a_bundle_runs_a_job_in_a_venv_without_the_dependencies(
    system: System, tmp_path: Path
) -> None:
    # Given a pilot bundle and a venv that has none of pandamq's dependencies
    bundle = tmp_path / "pilot.pyz"
    assert CliRunner().invoke(pandamq, ["pilot-bundle", "-o", str(bundle)]).exit_code == 0
    python = clean_venv(tmp_path / "venv")
    site = system.new_site()
    [job_id] = system.submit(JobSpec("echo from the bundle", site=site))
    # When the bundle runs one job there, with only the pilot's settings in its environment
    env = {"PATH": os.environ["PATH"], **pilot_environment(system.settings)}
    done = subprocess.run(
        [python, bundle, f"--site={site}", "--max-jobs=1", "--max-idle=60"],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=90,
    )
    # Then the pilot ran it, and it finished
    assert done.returncode == 0, done.stderr
    assert "ran 1 job(s)" in done.stdout
    assert system.wait_final([job_id]) == {job_id: "finished"}
