"""``pandamq serve`` ends with one error line, whichever of its services failed."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from broker.store.engine import open_engine
from broker.store.migrate import head_revision, upgrade
from tests.cli.processes import PANDAMQ
from tests.services import RABBITMQ_HOST


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


def migrated_sqlite(tmp_path: Path) -> str:
    """The URL of a SQLite database with the current schema."""
    url = f"sqlite:///{tmp_path / 'pandamq.sqlite'}"
    engine = open_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


MISSING = uuid.uuid4().hex[:10]


@pytest.mark.services
@pytest.mark.parametrize(
    ("broker_url", "database_url", "says"),
    [
        (
            f"amqp://guest:guest@{RABBITMQ_HOST}/pandamq-missing-{MISSING}",
            None,
            f"`rabbitmqctl add_vhost pandamq-missing-{MISSING}` and `rabbitmqctl set_permissions"
            f" -p pandamq-missing-{MISSING} guest '.*' '.*' '.*'`",
        ),
        (
            f"amqp://guest:wrong-password@{RABBITMQ_HOST}//",
            None,
            "ACCESS_REFUSED",
        ),
        (
            "memory://",
            f"postgresql+psycopg://postgres@127.0.0.1:5432/pandamq_missing_{MISSING}",
            f"create it (`createdb pandamq_missing_{MISSING}`, or CREATE DATABASE), "
            "then run `pandamq db upgrade`",
        ),
    ],
    ids=["vhost that does not exist", "wrong password", "database that does not exist"],
)
def test_serve_refused_for_good_exits_with_one_line_saying_what_to_do(
    broker_url: str, database_url: str | None, says: str, tmp_path: Path
) -> None:
    # Given a mistake in the settings that waiting cannot fix
    database_url = database_url or migrated_sqlite(tmp_path)
    # When the services are started
    done = serve(tmp_path, f"--broker-url={broker_url}", f"--database-url={database_url}")
    # Then they exit at once with one error line that says what to do, and never retry
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("pandamq: error: "), done.stderr
    assert says in errors[0]
    assert "retry" not in done.stderr and "Traceback" not in done.stderr, done.stderr
