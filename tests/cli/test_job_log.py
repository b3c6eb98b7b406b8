"""``pandamq job ID --log`` and the monitor's job page read the payload's log from
the SE; ``pandamq job ID`` lists the job's files. A real pilot, on both backends."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from click.testing import CliRunner, Result

from broker.protocol import JobSpec
from broker.settings import Settings
from cli.main import pandamq
from tests.broker.monitor.test_web import get
from tests.harness import System, wait_for


def cli(settings: Settings, *args: str) -> Result:
    """The command as a submitter runs it: RabbitMQ only, its database URL pointing nowhere."""
    env = {
        "PANDAMQ_BROKER_URL": settings.broker_url,
        "PANDAMQ_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/x",
        "PANDAMQ_CONFIG": None,
    }
    return CliRunner(env=env).invoke(pandamq, list(args))


def test_a_finished_job_shows_its_payload_log_and_files(system: System) -> None:
    # Given a job that ran through a pilot and printed a known line on each stream
    site = system.new_site()
    system.start_broker()
    system.start_pilot(site)
    line = f"hello from payload {uuid.uuid4().hex}"
    spec = JobSpec(command=f"echo '{line}'; echo 'to stderr' >&2", site=site)
    (job_id,) = system.submit(spec)
    assert system.wait_final([job_id]) == {job_id: "finished"}
    # When its log is asked for, then both streams are printed
    shown = cli(system.settings, "job", job_id, "--log")
    assert shown.exit_code == 0, shown.output
    assert f"==> payload.stdout (job {job_id} attempt 1) <==\n{line}\n" in shown.stdout
    assert "==> payload.stderr" in shown.stdout and "to stderr" in shown.stdout
    as_json = json.loads(cli(system.settings, "job", job_id, "--log", "--json").stdout)
    assert (as_json["attempt"], as_json["site"]) == (1, site)
    assert as_json["files"]["payload.stdout"] == f"{line}\n"
    # And the job lists its log file with its size, checksum and dataset
    (log_file,) = json.loads(cli(system.settings, "job", job_id, "--json").stdout)["files"]
    assert (log_file["role"], log_file["name"]) == ("log", f"{job_id}.1.log.tgz")
    assert log_file["dataset"] == f"{job_id}.log"
    assert log_file["size"] == Path(as_json["path"]).stat().st_size
    table = cli(system.settings, "job", job_id).stdout
    assert "files" in table and f"{job_id}.log" in table and log_file["adler32"] in table
    # And the monitor's job page shows the log's tail, as HTML and as JSON
    _, _, data = get(system.engine, f"/api/jobs/{job_id}")
    assert line in data["log"]["files"]["payload.stdout"]
    assert data["files"][0]["dataset"] == f"{job_id}.log"
    _, _, page = get(system.engine, f"/jobs/{job_id}")
    assert "Payload log" in page and line in page
    # When the tarball is gone from the SE, or another attempt is asked for, then one error line
    Path(as_json["path"]).unlink()
    gone = cli(system.settings, "job", job_id, "--log")
    assert gone.exit_code == 1 and gone.stdout == ""
    assert gone.stderr == (
        f"pandamq: error: log of job {job_id} attempt 1 ({site}:{as_json['path']})"
        " is missing from the SE\n"
    )
    other = cli(system.settings, "job", job_id, "--log", "--attempt", "2")
    assert other.exit_code == 2
    assert other.stderr == (
        f"pandamq: error: job {job_id} has no stored log for attempt 2 (it is finished)\n"
    )
    assert "is missing from the SE" in get(system.engine, f"/api/jobs/{job_id}")[2]["log"]["error"]


def test_a_job_with_no_log_yet_says_so_in_one_line(system: System) -> None:
    # Given a job waiting for a pilot at a site that has none
    site = system.new_site()
    system.start_broker()
    (job_id,) = system.submit(JobSpec(command="true", site=site))
    wait_for(lambda: system.states([job_id]) == {job_id: "activated"}, what="job activated")
    # When its log is asked for, then one clear error line and exit code 2
    result = cli(system.settings, "job", job_id, "--log")
    assert result.exit_code == 2 and result.stdout == ""
    expected = f"job {job_id} has no stored log yet (it is activated)"
    assert result.stderr == f"pandamq: error: {expected}\n"
    # And the monitor's job page says the same instead of a log
    _, _, data = get(system.engine, f"/api/jobs/{job_id}")
    assert data["log"] == {"error": expected} and data["files"] == []
    assert expected in get(system.engine, f"/jobs/{job_id}")[2]
    # And --attempt alone is refused
    assert cli(system.settings, "job", job_id, "--attempt", "1").exit_code == 2
