"""``pandamq demo``: the whole system in one process, ending with every job final."""

from __future__ import annotations

import re

from click.testing import CliRunner

from cli.main import pandamq


def test_demo_on_the_embedded_defaults_ends_with_every_job_final() -> None:
    result = CliRunner().invoke(pandamq, ["demo", "--jobs", "14"])
    assert result.exit_code == 0, result.output
    summary = re.search(
        r"all 14 jobs ended in [\d.]+ s: (\d+) failed, (\d+) finished", result.output
    )
    assert summary, result.output
    # jobs 3 and 10 of 14 are designed to fail
    assert summary.groups() == ("2", "12")
    assert "failed jobs (designed to fail)" in result.output


def test_demo_runs_on_rabbitmq_and_postgresql(services: tuple[str, str]) -> None:
    broker_url, database_url = services
    args = ["demo", "--jobs", "8", "--broker-url", broker_url, "--database-url", database_url]
    result = CliRunner().invoke(pandamq, args)
    assert result.exit_code == 0, result.output
    assert "all 8 jobs ended" in result.output
    assert "1 failed, 7 finished" in result.output
