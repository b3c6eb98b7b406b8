"""``pandamq submit`` through click, as a submitter with no database: bad input is
one line and exit 2, and nothing is created.

Run on every backend, with a broker service running; the submitter's database
URL points where nothing listens, so every check is the service's.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select

from broker.store.engine import transaction
from broker.store.schema import jobs
from broker.store.sites import add_site
from cli.main import pandamq
from tests.harness import System

UNREACHABLE_BROKER = "amqp://guest:guest@127.0.0.1:1//"
UNREACHABLE_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:1/x"


@dataclass
class Submitter:
    """Runs ``pandamq submit`` in-process against one backend, with a site of its own."""

    system: System
    site: str
    offline: str
    tmp_path: Path

    def env(self, **changes: str) -> dict[str, str | None]:
        env: dict[str, str | None] = {
            "PANDAMQ_BROKER_URL": self.system.settings.broker_url,
            "PANDAMQ_DATABASE_URL": UNREACHABLE_DATABASE,
            "PANDAMQ_CONFIG": None,
        }
        env.update({f"PANDAMQ_{k.upper()}": v for k, v in changes.items()})
        return env

    def file(self, name: str, text: str) -> Path:
        path = self.tmp_path / name
        path.write_text(text)
        return path

    def submit(self, path: Path, **env: str) -> Result:
        return CliRunner(env=self.env(**env)).invoke(pandamq, ["submit", str(path)])

    def job_count(self) -> int:
        with transaction(self.system.engine) as conn:
            return int(conn.execute(select(func.count()).select_from(jobs)).scalar_one())

    def stored(self, job_id: str) -> dict[str, object]:
        return self.system.job(job_id)


@pytest.fixture
def submitter(system: System, tmp_path: Path) -> Iterator[Submitter]:
    """A running broker service, a new site and an offline one."""
    site = f"SITE_{uuid.uuid4().hex[:8].upper()}"
    offline = f"OFFLINE_{uuid.uuid4().hex[:8].upper()}"
    with transaction(system.engine) as conn:
        add_site(conn, site)
        add_site(conn, offline, "offline")
    system.start_broker()
    yield Submitter(system, site, offline, tmp_path)


def assert_one_error_line(result: Result, exit_code: int) -> str:
    """The command failed cleanly: ``exit_code``, one stderr line, no stdout, no traceback."""
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("pandamq: error: "), lines
    return lines[0]


BAD_SPECS = {
    "missing command": ("spec.json", '{"site": "{site}"}', ["missing", "'command'"]),
    "wrong type": ("spec.json", '{"command": "true", "cores": "two"}', ["'cores'", "integer"]),
    "unknown site": (
        "spec.json",
        '{"command": "true", "site": "NO_SUCH_SITE"}',
        ["'NO_SUCH_SITE'", "site catalogue"],
    ),
    "offline site": (
        "spec.json",
        '{"command": "true", "site": "{offline}"}',
        ["'{offline}'", "offline"],
    ),
    "unknown task": (
        "spec.json",
        '{"command": "true", "site": "{site}", "task_id": "no-such-task"}',
        ["task 'no-such-task' does not exist"],
    ),
    "unregistered input file": (
        "spec.json",
        '{"command": "true", "site": "{site}", "input_files": ["user:ghost.dat"]}',
        ["input file 'user:ghost.dat' is not registered", "pandamq datasets add"],
    ),
    "not json": ("spec.txt", "{not json", ["spec.txt", "not valid JSON"]),
    "empty json file": ("spec.json", "", ["spec.json", "empty"]),
    "empty yaml file": ("spec.yaml", "\n", ["spec.yaml", "empty"]),
    "yaml list with one bad item": (
        "specs.yaml",
        "- command: 'true'\n  site: {site}\n- command: 'true'\n  cores: two\n",
        ["specs.yaml item 2", "'cores'", "integer"],
    ),
}


@pytest.mark.parametrize("case", BAD_SPECS.values(), ids=BAD_SPECS.keys())
def test_bad_job_spec_is_one_line_exit_2_and_creates_nothing(
    submitter: Submitter, case: tuple[str, str, list[str]]
) -> None:
    # Given a file with a bad job spec
    name, text, named = case
    text = text.replace("{site}", submitter.site).replace("{offline}", submitter.offline)
    named = [n.replace("{offline}", submitter.offline) for n in named]
    path = submitter.file(name, text)
    jobs_before = submitter.job_count()
    # When it is submitted
    result = submitter.submit(path)
    # Then one line names the problem, the exit code says bad input
    line = assert_one_error_line(result, exit_code=2)
    for words in named:
        assert words in line, line
    # And nothing was created
    assert submitter.job_count() == jobs_before


def test_valid_spec_prints_its_id_and_is_stored_as_written(submitter: Submitter) -> None:
    # Given a valid job spec for a known site, and a submitter with no database
    spec = {"command": "echo hello", "site": submitter.site, "cores": 2, "name": "hello"}
    path = submitter.file("spec.json", json.dumps(spec))
    # When it is submitted
    result = submitter.submit(path)
    # Then the job id is printed and nothing else, once the service has stored it
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    (job_id,) = result.stdout.split()
    stored = submitter.stored(job_id)
    assert stored["spec"]["command"] == "echo hello"  # type: ignore[index]
    assert (stored["site"], stored["name"]) == (submitter.site, "hello")


def test_unreachable_broker_is_one_line_exit_1(submitter: Submitter) -> None:
    # Given a valid spec and a broker URL where nothing listens
    path = submitter.file("spec.json", json.dumps({"command": "true", "site": submitter.site}))
    jobs_before = submitter.job_count()
    # When it is submitted
    result = submitter.submit(path, broker_url=UNREACHABLE_BROKER)
    # Then one line says the message broker cannot be reached, and where
    line = assert_one_error_line(result, exit_code=1)
    assert "message broker" in line and "127.0.0.1:1" in line, line
    assert "guest:guest" not in line  # the password is not shown
    assert submitter.job_count() == jobs_before


def test_refused_login_is_one_line_exit_1(submitter: Submitter) -> None:
    # Given a valid spec and a RabbitMQ that refuses the credentials
    path = submitter.file("spec.json", json.dumps({"command": "true", "site": submitter.site}))
    # When it is submitted
    result = submitter.submit(path, broker_url="amqp://nobody:wrong@127.0.0.1:5672//")
    # Then one line says so
    line = assert_one_error_line(result, exit_code=1)
    assert "message broker" in line, line


def test_a_missing_spec_file_is_one_line_exit_2(submitter: Submitter) -> None:
    result = submitter.submit(submitter.tmp_path / "nowhere.json")
    line = assert_one_error_line(result, exit_code=2)
    assert "cannot read" in line and "nowhere.json" in line, line
