"""Kill, retries and the memory limit through the whole system, on every backend."""

from __future__ import annotations

from sqlalchemy import update

from broker import topology
from broker.error_codes import ErrorFamily, PilotError, TaskBufferError
from broker.protocol import JobCommand, JobSpec, encode
from broker.store.clock import now
from broker.store.engine import transaction
from broker.store.schema import jobs
from cli.benchmark.submissions import publish_to
from tests.harness import System, wait_for


def command(system: System, message: JobCommand) -> None:
    queue = topology.Topology(system.settings.queue_type).commands_queue()
    publish_to(system.settings, queue, [encode(message)])


def state(system: System, job_id: str) -> str:
    return system.states([job_id]).get(job_id, "not yet")


def test_a_queued_job_is_cancelled_and_its_delivery_refused(system: System) -> None:
    # Given an activated job and no pilot yet
    site = system.new_site()
    system.start_broker()
    (job_id,) = system.submit(JobSpec(command="true", site=site))
    wait_for(lambda: state(system, job_id) == "activated", what="activation")
    # When it is killed, and then a pilot takes its (stale) delivery
    command(system, JobCommand("kill", [job_id], reason="not needed"))
    wait_for(lambda: state(system, job_id) == "cancelled", what="cancellation")
    system.start_pilot(site)
    (other,) = system.submit(JobSpec(command="true", site=site))
    system.wait_final([other])  # the pilot went through the stale delivery first
    # Then the job stays cancelled and never ran
    job = system.job(job_id)
    assert job["state"] == "cancelled" and job["pilot_id"] is None
    assert (job["error_code"], job["diagnostic"]) == (TaskBufferError.KILLED, "not needed")


def test_a_running_payload_is_stopped_and_the_job_cancelled(system: System) -> None:
    site = system.new_site()
    system.start_broker()
    system.start_pilot(site)
    (job_id,) = system.submit(JobSpec(command="sleep 60", site=site))
    wait_for(lambda: state(system, job_id) == "running", what="the payload to run")
    command(system, JobCommand("kill", [job_id], reason="operator"))
    assert system.wait_final([job_id], timeout_s=30) == {job_id: "cancelled"}
    job = system.job(job_id)
    assert (job["error_family"], job["error_code"]) == (ErrorFamily.PILOT, PilotError.KILLED)
    assert job["attempt"] == 1  # a killed job is not retried


def test_a_pilot_that_missed_the_kill_learns_it_at_its_next_heartbeat(system: System) -> None:
    # Given a running job whose kill was recorded but whose command never reached the pilot
    site = system.new_site()
    system.start_broker()
    system.start_pilot(site)
    (job_id,) = system.submit(JobSpec(command="sleep 60", site=site))
    wait_for(lambda: state(system, job_id) == "running", what="the payload to run")
    with transaction(system.engine) as conn:
        conn.execute(update(jobs).where(jobs.c.id == job_id).values(kill_requested_at=now()))
    # Then the next heartbeat brings the command back, and the payload stops
    assert system.wait_final([job_id], timeout_s=30) == {job_id: "cancelled"}


def test_a_failed_payload_is_retried_until_max_attempts(system: System) -> None:
    site = system.new_site()
    system.start_broker()
    system.start_pilot(site)
    (job_id,) = system.submit(JobSpec(command="exit 5", site=site, max_attempts=2))
    wait_for(
        lambda: state(system, job_id) != "not yet" and len(system.job(job_id)["attempts"]) == 2,
        what="a second attempt",
    )
    assert system.wait_final([job_id]) == {job_id: "failed"}
    attempts = system.job(job_id)["attempts"]
    assert [(a["state"], a["exit_code"]) for a in attempts] == [("failed", 5), ("failed", 5)]


def test_a_final_exit_code_is_not_retried(system: System) -> None:
    site = system.new_site()
    system.start_broker()
    system.start_pilot(site)
    (job_id,) = system.submit(JobSpec(command="exit 9", site=site, final_exit_codes=[9]))
    system.wait_final([job_id])
    assert len(system.job(job_id)["attempts"]) == 1


def test_a_payload_over_its_memory_is_stopped_and_retried_with_more(system: System) -> None:
    site = system.new_site()
    system.start_broker()
    system.start_pilot(site)
    hog = "python3 -c 'import time; x = bytearray(200 * 2**20); time.sleep(30)'"
    spec = JobSpec(command=hog, site=site, memory_mb=50, max_attempts=2)
    (job_id,) = system.submit(spec)
    assert system.wait_final([job_id], timeout_s=60) == {job_id: "failed"}
    job = system.job(job_id)
    assert [a["error_code"] for a in job["attempts"]] == [PilotError.OUT_OF_MEMORY] * 2
    assert job["spec"]["memory_mb"] == 75
    assert "more than the 75 MB asked for" in job["diagnostic"]
