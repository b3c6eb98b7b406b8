"""``pandamq top --once``: one frame of the live dashboard."""

from __future__ import annotations

from datetime import timedelta

from click.testing import CliRunner
from sqlalchemy import Engine

from broker.store.engine import transaction
from cli.main import pandamq
from tests.broker.monitor.seed import failed_job, new_site


def test_top_draws_sites_by_state_with_error_rate_and_failures(engine: Engine) -> None:
    # Given a site with two jobs that failed last in a shared database: two hours
    # ahead, after those the DDM bridge's timeout test fails an hour ahead
    ahead = -timedelta(hours=2)
    with transaction(engine) as conn:
        site = new_site(conn)
        job_id, _ = (failed_job(conn, site, 1305, "disk full", 1, ago=ahead) for _ in "ab")
    env = {"PANDAMQ_DATABASE_URL": engine.url.render_as_string(False), "PANDAMQ_CONFIG": None}
    # When one frame is drawn
    result = CliRunner(env=env).invoke(pandamq, ["top", "--once"])
    # Then the site's row counts the failures, a 100 % error rate, and lists one
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if f" {site} " in line)
    assert "2" in row.split() and "100.0%" in row
    assert "disk full" in result.stdout and job_id[:12] in result.stdout
