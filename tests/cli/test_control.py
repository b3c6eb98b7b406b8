"""``pandamq kill``, ``pandamq retry`` and ``pandamq dead-letters`` against a running system."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

from click.testing import CliRunner, Result

from broker import topology
from broker.protocol import JobSpec
from cli.benchmark.submissions import publish_to
from cli.main import pandamq
from tests.conftest import test_settings
from tests.harness import System, dead_letters, wait_for
from tests.services import _rabbitmqctl


def cli(system: System, *args: str) -> Result:
    """The command as a submitter runs it: RabbitMQ only, its database URL pointing nowhere."""
    env = {
        "PANDAMQ_BROKER_URL": system.settings.broker_url,
        "PANDAMQ_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/x",
        "PANDAMQ_CONFIG": None,
    }
    return CliRunner(env=env).invoke(pandamq, list(args))


def test_kill_and_wait_ends_a_running_job(system: System) -> None:
    site = system.new_site()
    system.start_broker()
    system.start_pilot(site)
    (job_id,) = system.submit(JobSpec(command="sleep 60", site=site))
    wait_for(lambda: system.states([job_id]).get(job_id) == "running", what="the payload")
    result = cli(system, "kill", job_id, "--reason", "test", "--wait", "30")
    assert result.exit_code == 0, result.output
    assert f"{job_id} cancelled (attempt 1)" in result.stdout


def test_retry_by_hand_gives_a_failed_job_a_new_attempt(system: System) -> None:
    site = system.new_site()
    system.start_broker()
    system.start_pilot(site)
    (job_id,) = system.submit(JobSpec(command="exit 3", site=site, max_attempts=1))
    system.wait_final([job_id])
    result = cli(system, "retry", job_id, "--wait", "30")
    assert result.exit_code == 0, result.output
    wait_for(lambda: len(system.job(job_id)["attempts"]) == 2, what="the second attempt")
    assert system.wait_final([job_id]) == {job_id: "failed"}


def test_kill_of_an_unknown_job_is_one_line_exit_2(system: System) -> None:
    system.start_broker()
    result = cli(system, "kill", "no-such-job")
    assert result.exit_code == 2
    assert result.stderr.strip() == "pandamq: error: kill: no job 'no-such-job'"


def test_dead_letters_lists_refused_messages_and_leaves_them(system: System) -> None:
    system.start_broker()
    queue = topology.Topology().submit_queue()
    publish_to(system.settings, queue, [b"this is not a job"])
    listing: list[Result] = []

    def listed() -> bool:
        listing.append(cli(system, "dead-letters", "--json"))
        return "this is not a job" in listing[-1].stdout

    wait_for(listed, what="the dead letter to be listed")
    assert f'"queue": "{topology.SUBMIT_QUEUE}"' in listing[-1].stdout
    assert "not valid JSON" in listing[-1].stdout
    # listing does not take them away
    assert "this is not a job" in cli(system, "dead-letters").stdout
    dead_letters(system.settings)  # leave the queue empty for other tests


def test_killing_another_users_job_is_refused_in_one_line(
    services: tuple[str, str], tmp_path: Path
) -> None:
    # Given a job submitted by guest, and a RabbitMQ user bob on the same vhost
    system = System(test_settings(*services, tmp_path))
    site = system.new_site()
    system.start_broker()
    (job_id,) = system.submit(JobSpec(command="true", site=site))
    wait_for(lambda: system.states([job_id]), what="the job")
    owner = system.job(job_id)["owner"]
    vhost = services[0].rsplit("/", 1)[1]
    bob = f"bob-{uuid.uuid4().hex[:6]}"
    _rabbitmqctl("add_user", bob, "secret")
    _rabbitmqctl("set_permissions", "-p", vhost, bob, ".*", ".*", ".*")
    # When bob, without the production role, asks to kill it
    env = {"PANDAMQ_BROKER_URL": f"amqp://{bob}:secret@127.0.0.1:5672/{vhost}"}
    try:
        result = CliRunner(env=env).invoke(pandamq, ["kill", job_id])
    finally:
        _rabbitmqctl("delete_user", bob)
        system.close()
    # Then the service refuses it, saying why in one line
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"pandamq: error: kill of job {job_id} refused: {bob} does not own it "
        f"(owned by {owner}) and has no production role"
    )


def test_a_retry_that_changes_nothing_says_why_and_exits_1(system: System) -> None:
    # Given a job that finished
    site = system.new_site()
    system.start_broker()
    system.start_pilot(site)
    (job_id,) = system.submit(JobSpec(command="true", site=site))
    assert system.wait_final([job_id]) == {job_id: "finished"}
    # When it is retried by hand
    result = cli(system, "retry", job_id, "--wait", "5")
    # Then nothing is retried, the command says why, and exits 1 without waiting
    assert result.exit_code == 1
    assert f"{job_id}: not changed: is finished; only failed jobs are retried" in result.stderr
    assert "retry changed nothing" in result.stderr
    assert len(system.job(job_id)["attempts"]) == 1


def test_submit_wait_that_times_out_names_the_state_the_job_is_in(
    system: System, tmp_path: Path
) -> None:
    # Given a running payload that takes longer than the wait
    site = system.new_site()
    system.start_broker()
    system.start_pilot(site)
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps({"command": "sleep 30", "site": site}))
    # When it is submitted with --wait --timeout 3
    result = cli(system, "submit", str(spec), "--wait", "--timeout", "3")
    # Then it exits 1 and says the job is still in its state, not that it ended
    assert result.exit_code == 1
    (job_id,) = result.stdout.split()
    said = re.search(rf"job {job_id} is still (\w+) after 3.0 s", result.stderr)
    assert said is not None, result.stderr
    assert said.group(1) in {"activated", "sent", "starting", "running"}
    assert "ended" not in result.stderr
    cli(system, "kill", job_id)


def test_job_prints_its_spec_as_json_whatever_the_command_says(system: System) -> None:
    # Given a job at a site without pilots, whose command holds brackets and quotes
    site = system.new_site()
    system.start_broker()
    command = "echo '[bold]not markup[/bold]' \"[x]\""
    (job_id,) = system.submit(JobSpec(command=command, site=site, name="json spec"))
    wait_for(lambda: system.states([job_id]), what="the job")
    # When it is shown
    result = cli(system, "job", job_id)
    # Then its spec line is JSON that reads back as the spec, character for character
    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.stdout.splitlines() if line.lstrip().startswith("spec ")]
    spec = json.loads(line.split("spec", 1)[1])
    assert (spec["command"], spec["site"], spec["name"]) == (command, site, "json spec")
