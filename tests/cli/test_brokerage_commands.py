"""``pandamq sites``, ``sites apply``, ``sites set-status``, ``tasks``, ``task`` and the
brokerage part of ``pandamq job``."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from click.testing import CliRunner, Result

from broker.protocol import JobSpec
from broker.security import identity
from cli.main import pandamq
from tests.harness import System, wait_for
from tests.test_brokerage import new_dataset


def cli(system: System, *args: str) -> Result:
    """The command as an operator runs it: ``sites`` opens the database, the rest is AMQP."""
    env = {
        "PANDAMQ_BROKER_URL": system.settings.broker_url,
        "PANDAMQ_DATABASE_URL": system.settings.database_url,
        "PANDAMQ_CONFIG": None,
    }
    return CliRunner(env=env).invoke(pandamq, list(args))


def catalogue(tmp_path: Path) -> tuple[Path, str, str]:
    a, b = (f"SITE_{uuid.uuid4().hex[:8].upper()}" for _ in range(2))
    path = tmp_path / "sites.toml"
    path.write_text(
        f"""
[sites.{a}]
se = "{a}_DATADISK"
releases = ["24.0"]
max_walltime_s = 86400
[[sites.{a}.slots]]
cores = 1
memory_mb = 2000
[[sites.{a}.slots]]
cores = 8
memory_mb = 16000

[sites.{b}]
status = "brokeroff"
"""
    )
    return path, a, b


def test_sites_apply_is_idempotent_and_sites_json_shows_it(system: System, tmp_path: Path) -> None:
    path, a, b = catalogue(tmp_path)
    first = cli(system, "sites", "apply", str(path))
    assert first.exit_code == 0, first.output
    assert f"site {a} added" in first.stdout and f"site {b} added" in first.stdout
    again = cli(system, "sites", "apply", str(path))
    assert f"site {a} unchanged" in again.stdout and f"site {b} unchanged" in again.stdout
    listed = {s["name"]: s for s in json.loads(cli(system, "sites", "--json").stdout)}
    assert listed[a]["se"] == f"{a}_DATADISK" and listed[a]["releases"] == ["24.0"]
    assert [s["resource_type"] for s in listed[a]["slots"]] == ["SCORE", "MCORE"]
    assert listed[b]["status"] == "brokeroff"
    table = cli(system, "sites")
    assert table.exit_code == 0 and "MCORE 8c/16000MB" in table.stdout


def test_sites_set_status_and_its_errors(system: System, tmp_path: Path) -> None:
    path, a, _ = catalogue(tmp_path)
    cli(system, "sites", "apply", str(path))
    result = cli(system, "sites", "set-status", a, "offline", "--reason", "disk full")
    assert result.exit_code == 0 and f"site {a}: online -> offline" in result.stdout
    listed = {s["name"]: s for s in json.loads(cli(system, "sites", "--json").stdout)}
    assert listed[a]["status_by"] == identity.of(system.settings)
    assert listed[a]["status_reason"] == "disk full"
    unknown = cli(system, "sites", "set-status", "NO_SUCH_SITE", "online")
    assert unknown.exit_code == 2
    assert unknown.stderr.strip().startswith("pandamq: error: no site 'NO_SUCH_SITE'")
    bad = tmp_path / "bad.toml"
    bad.write_text("[sites.X]\nstatus = 'gone'\n")
    refused = cli(system, "sites", "apply", str(bad))
    assert refused.exit_code == 2 and "status must be one of" in refused.stderr


def test_a_task_submitted_from_a_file_shows_its_progress(system: System, tmp_path: Path) -> None:
    path, a, _ = catalogue(tmp_path)
    cli(system, "sites", "apply", str(path))
    dataset = new_dataset(system, 6, site=a)
    system.start_broker()
    system.start_pilot(a)
    spec = tmp_path / "task.yaml"
    spec.write_text(
        f"command: cat {{inputs}} > {{outputs}}\n"
        f"input_dataset: {dataset}\noutput_dataset: {dataset}.out\n"
        f"files_per_job: 2\nsites: [{a}]\nrelease: '24.0'\n"
    )
    submitted = cli(system, "submit", str(spec), "--wait", "--timeout", "60")
    assert submitted.exit_code == 0, submitted.output
    task_id = submitted.stdout.strip()
    shown = json.loads(cli(system, "task", task_id, "--json").stdout)
    assert (shown["status"], shown["jobs"], shown["files_done"]) == ("done", 3, 6)
    assert (shown["output_dataset"], shown["output_files"]) == (f"{dataset}.out", 3)
    text = cli(system, "task", task_id).stdout
    assert f"output_dataset  {dataset}.out" in text and "output_files  3" in text
    # And a task naming the same output dataset is refused in one line
    spec.write_text(spec.read_text().replace("files_per_job: 2", "files_per_job: 3"))
    again = cli(system, "submit", str(spec))
    assert again.exit_code == 2
    assert again.stderr.strip() == (
        f"pandamq: error: task spec: dataset '{dataset}.out' exists already"
    )
    listed = cli(system, "tasks")
    assert listed.exit_code == 0 and task_id in listed.stdout
    job = cli(system, "job", f"{task_id}-000001")
    assert "highest weight" in job.stdout and "sites considered" in job.stdout


def test_a_task_over_an_unknown_dataset_is_one_line_and_job_shows_skipped_sites(
    system: System, tmp_path: Path
) -> None:
    system.start_broker()
    spec = tmp_path / "task.json"
    spec.write_text(json.dumps({"command": "true", "input_dataset": "nope", "output_dataset": "o"}))
    result = cli(system, "submit", str(spec))
    assert result.exit_code == 2
    assert result.stderr.strip() == "pandamq: error: task spec: input dataset 'nope' does not exist"
    path, a, b = catalogue(tmp_path)
    cli(system, "sites", "apply", str(path))
    (job_id,) = system.submit(JobSpec(command="true", sites=[a, b], memory_mb=64000))
    wait_for(lambda: system.states([job_id]).get(job_id) == "failed", what="brokerage")
    shown = cli(system, "job", job_id)
    assert "no site fits the job" in shown.stdout
    assert "status brokeroff" in shown.stdout and "memory: needs 64000 MB" in shown.stdout
