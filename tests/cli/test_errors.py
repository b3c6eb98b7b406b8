"""``pandamq errors`` on failures seeded in SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta

from click.testing import CliRunner, Result

from broker.store.engine import transaction
from cli.main import pandamq
from tests.broker.monitor.seed import failed_job, new_site
from tests.harness import System


def cli(system: System, *args: str) -> Result:
    """``pandamq errors`` as a submitter runs it: over AMQP, no database URL that works."""
    env = {
        "PANDAMQ_BROKER_URL": system.settings.broker_url,
        "PANDAMQ_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/x",
        "PANDAMQ_CONFIG": None,
    }
    return CliRunner(env=env).invoke(pandamq, ["errors", *args])


def test_errors_groups_failures_by_code_and_diagnostic(system: System) -> None:
    # Given a site with three lost heartbeats, two payload failures, and one old failure
    engine = system.engine
    system.start_broker()
    with transaction(engine) as conn:
        site, other = new_site(conn), new_site(conn)
        lost = [
            failed_job(conn, site, 100, f"no heartbeat for {7200 + i} s", family="dispatcher")
            for i in range(3)
        ]
        payload = [failed_job(conn, site, 1305, "file not found", exit_code=2) for _ in range(2)]
        failed_job(conn, site, 1305, "too old", exit_code=2, ago=timedelta(hours=13))
        failed_job(conn, other, 1308, "out of memory")
    # When the error list of the last 12 hours at the site is asked for
    result = cli(system, "--site", site, "--json")
    # Then the failures are grouped, most frequent first, with counts and example jobs
    assert result.exit_code == 0, result.output
    errors = json.loads(result.stdout)["errors"]
    assert [(e["error_family"], e["error_code"], e["count"]) for e in errors] == [
        ("dispatcher", 100, 3),
        ("pilot", 1305, 2),
    ]
    assert errors[0]["description"] == "lost heartbeat"
    assert set(errors[0]["example_jobs"]) == set(lost)
    assert errors[1]["exit_code"] == 2 and set(errors[1]["example_jobs"]) == set(payload)
    # And the table for people names them too; a longer window finds the old one
    table = cli(system, "--site", site)
    assert table.exit_code == 0 and "no heartbeat for" in table.stdout
    longer = json.loads(cli(system, "--site", site, "--since", "1d", "--json").stdout)
    assert sum(e["count"] for e in longer["errors"]) == 6


def test_errors_refuses_a_bad_window_in_one_line(system: System) -> None:
    result = cli(system, "--since", "yesterday")
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("pandamq: error: time window 'yesterday'")
