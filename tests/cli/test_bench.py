"""``pandamq bench``: the lifecycle benchmark runs end to end and reports what SQL says.

A correctness test of the harness on a few jobs, not a measurement: the
figures in docs/performance.md come from full runs on a quiet machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.processes import Pandamq

pytestmark = pytest.mark.services


def test_capacity_mode_takes_every_job_through_its_life_and_reports_json(
    services: tuple[str, str], tmp_path: Path
) -> None:
    # Given RabbitMQ and PostgreSQL
    pandamq = Pandamq(*services, tmp_path)
    # When 40 jobs go through their life, claimed and reported by virtual pilots
    result = pandamq.run(
        "bench",
        "--jobs",
        "40",
        "--sites",
        "2",
        "--work-dir",
        str(tmp_path / "bench"),
        timeout_s=120,
    )
    # Then the last line is JSON whose figures add up
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["mode"] == "capacity"
    assert figures["jobs"] == 40
    assert figures["jobs_per_s"] > 0
    assert 0 <= figures["dispatch_p50_ms"] <= figures["dispatch_p99_ms"]
    # One submission, dispatch, claim, reply and three events per job, nothing more
    assert figures["messages_per_job"] == 7.0
    assert figures["peak_rss_mb"]["broker"] > 0
    assert figures["sql_transactions_per_job"] > 0
    # And a readable table came before it
    assert "pandamq lifecycle benchmark" in result.stdout


def test_the_benchmark_refuses_the_in_process_transport(tmp_path: Path) -> None:
    # Given the embedded defaults, where no other process can reach the queues
    pandamq = Pandamq("memory://", f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path)
    # When the benchmark is asked to run there
    result = pandamq.run("bench", "--jobs", "5", check=False)
    # Then it says so in one line and exits 2
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "set PANDAMQ_BROKER_URL to a RabbitMQ" in result.stderr


def test_old_jobs_are_in_the_database_before_the_run(
    services: tuple[str, str], tmp_path: Path
) -> None:
    # Given RabbitMQ and PostgreSQL
    pandamq = Pandamq(*services, tmp_path)
    # When a run of 10 jobs starts with 300 old finished jobs put in first
    result = pandamq.run(
        "bench", "--jobs", "10", "--sites", "1", "--old-jobs", "300", timeout_s=120
    )
    # Then the database held them beside the run's own jobs
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["jobs_per_s"] > 0
    assert figures["job_rows"] >= 310


def test_idle_mode_reports_the_cpu_of_every_kind_of_process(
    services: tuple[str, str], tmp_path: Path
) -> None:
    # Given RabbitMQ and PostgreSQL
    pandamq = Pandamq(*services, tmp_path)
    # When the services and a pilot per site sit idle for 2 s
    result = pandamq.run(
        "bench", "--mode", "idle", "--sites", "2", "--idle-seconds", "2", timeout_s=120
    )
    # Then the CPU each kind used is reported, as a share of one core
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["mode"] == "idle"
    cpu = figures["idle_cpu_percent"]
    assert set(cpu) == {"broker", "ddm", "monitor", "pilot"}
    assert all(0 <= v <= 200 for v in cpu.values())


def test_queries_mode_runs_capacity_with_and_without_submitters_asking(
    services: tuple[str, str], tmp_path: Path
) -> None:
    # Given RabbitMQ and PostgreSQL
    pandamq = Pandamq(*services, tmp_path)
    # When 300 jobs run twice, the second time with 4 submitters over 2 processes
    # asking `jobs` and `job ID` once a second
    result = pandamq.run(
        "bench",
        "--mode",
        "queries",
        "--jobs",
        "300",
        "--sites",
        "2",
        "--queriers",
        "4",
        "--querier-processes",
        "2",
        timeout_s=110,
    )
    # Then both runs took every job through its life, and the ratio compares them
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    without, with_ = figures["without_queriers"], figures["with_queriers"]
    assert figures["mode"] == "queries"
    assert figures["queriers"] == 4
    assert without["jobs_per_s"] > 0 and with_["jobs_per_s"] > 0
    assert figures["throughput_ratio"] == round(with_["jobs_per_s"] / without["jobs_per_s"], 3)
    # And the submitters' queries were answered, none failed, and their latencies are told
    assert with_["queries_answered"] > 0
    assert with_["queries_failed"] == 0, with_["query_errors"]
    assert 0 < with_["job_answer_p50_ms"] <= with_["job_answer_p99_ms"]
    # (with 300 to 600 jobs in the database, every page is shorter than 1,000, counted apart)
    assert with_["short_pages"] > 0
    assert "queries_answered" not in without


def test_pages_mode_times_the_first_and_a_deep_page_of_a_user_with_many_jobs(
    services: tuple[str, str], tmp_path: Path
) -> None:
    # Given RabbitMQ and PostgreSQL
    pandamq = Pandamq(*services, tmp_path)
    # When a user with 3,500 jobs has their first and third page of 1,000 timed 3 times
    result = pandamq.run(
        "bench",
        "--mode",
        "pages",
        "--sites",
        "1",
        "--owner-jobs",
        "3500",
        "--deep-page",
        "3",
        "--tries",
        "3",
        "--work-dir",
        str(tmp_path / "bench"),
        timeout_s=110,
    )
    # Then both pages' latencies are told, and the plans of their query are written down
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["mode"] == "pages"
    assert 0 < figures["first_page_p50_ms"] <= figures["first_page_p99_ms"]
    assert 0 < figures["deep_page_p50_ms"] <= figures["deep_page_p99_ms"]
    plans = Path(figures["plans_file"]).read_text()
    assert plans.count("Execution Time") == 2
