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
from cli.bundle import is_project, pilot_imports
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


#: Imports every project module a bundle carries, in an interpreter without SQLAlchemy.
IMPORT_ALL = """
import importlib, importlib.util, sys, zipfile
bundle = sys.argv[1]
assert importlib.util.find_spec("sqlalchemy") is None, "sqlalchemy is importable"
sys.path.insert(0, bundle)
names = [n for n in zipfile.ZipFile(bundle).namelist() if n.endswith(".py")]
modules = [n[:-3].replace("/", ".").removesuffix(".__init__") for n in names]
for module in sorted(m for m in modules if m.split(".")[0] in sys.argv[2:]):
    importlib.import_module(module)
    print(module)
"""


def project_files(modules: dict[str, str]) -> set[str]:
    """The bundle paths of the project's modules among ``modules`` (name: file)."""
    return {
        name.replace(".", "/") + ("/__init__.py" if path.endswith("__init__.py") else ".py")
        for name, path in modules.items()
        if is_project(name)
    }


def test_the_bundle_carries_exactly_the_project_modules_the_pilot_imports(
    tmp_path: Path,
) -> None:
    # When the bundle is built
    output = tmp_path / "pilot.pyz"
    assert CliRunner().invoke(pandamq, ["pilot-bundle", "-o", str(output)]).exit_code == 0
    # Then its modules of this project are those the pilot loads, no more (no ddm_bridge SQL)
    names = zipfile.ZipFile(output).namelist()
    carried = {n for n in names if n.endswith(".py") and is_project(n.split("/")[0])}
    assert carried == project_files(pilot_imports())
    assert "ddm_bridge/se.py" in carried and "ddm_bridge/bridge.py" not in carried


@pytest.mark.timeout(60)
def test_every_project_module_of_the_bundle_imports_without_sqlalchemy(tmp_path: Path) -> None:
    # Given a bundle, and a fresh interpreter in a venv where SQLAlchemy cannot be imported
    bundle = tmp_path / "pilot.pyz"
    assert CliRunner().invoke(pandamq, ["pilot-bundle", "-o", str(bundle)]).exit_code == 0
    python = clean_venv(tmp_path / "venv")
    # When it imports every module of this project that the bundle carries
    packages = sorted({n.split("/")[0] for n in zipfile.ZipFile(bundle).namelist()})
    done = subprocess.run(
        [python, "-I", "-c", IMPORT_ALL, str(bundle), *filter(is_project, packages)],
        check=False,
        capture_output=True,
        text=True,
        timeout=50,
    )
    # Then each imports, the pilot's entry point among them
    assert done.returncode == 0, done.stderr
    assert "pilot_agent.__main__" in done.stdout.split()
    # And the bundle starts, with nothing but the standard library beside it
    usage = subprocess.run(
        [python, "-I", bundle, "--help"], check=False, capture_output=True, text=True, timeout=50
    )
    assert usage.returncode == 0 and "--site" in usage.stdout, usage.stderr


@pytest.mark.timeout(120)
def test_a_bundle_runs_a_job_in_a_venv_without_the_dependencies(
    system: System, tmp_path: Path
) -> None:
    # Given a pilot bundle and a venv that has none of pandamq's dependencies
    bundle = tmp_path / "pilot.pyz"
    assert CliRunner().invoke(pandamq, ["pilot-bundle", "-o", str(bundle)]).exit_code == 0
    python = clean_venv(tmp_path / "venv")
    site = system.new_site()
    system.start_bridge()  # it registers the job's log and moves the job on from holding
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
