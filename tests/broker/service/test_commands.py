"""Kill and retry commands, as the broker service carries them out."""

from __future__ import annotations

from sqlalchemy import Engine, select

from broker.messaging.consumer import Incoming
from broker.protocol import JobCommand, PilotCommand, decode_body
from broker.service.commands import CommandHandler
from broker.settings import Settings
from broker.states import JobState
from broker.store.engine import transaction
from broker.store.schema import outbox
from tests.broker.service.jobs import OWNER, PILOT, SITE, jobs_in, row

S = JobState


def run(engine: Engine, command: JobCommand) -> Incoming[JobCommand]:
    incoming = Incoming(command, None, user_id=OWNER)
    CommandHandler(engine, Settings())([incoming])
    return incoming


def kill_commands_for(engine: Engine, job_id: str) -> list[PilotCommand]:
    with transaction(engine) as conn:
        rows = conn.execute(select(outbox.c.routing_key, outbox.c.body, outbox.c.mandatory))
        found = [(r.routing_key, r.mandatory, r.body) for r in rows if job_id in r.body]
    assert all(rk == f"{SITE}.{PILOT}" and not mandatory for rk, mandatory, _ in found)
    return [decode_body(PilotCommand, body) for _, _, body in found]


def test_a_queued_job_is_cancelled_at_once(engine: Engine) -> None:
    (job_id,) = jobs_in(engine, S.ACTIVATED)
    run(engine, JobCommand("kill", [job_id], reason="wrong input"))
    job = row(engine, job_id)
    assert (job["state"], job["error_family"], job["error_code"], job["diagnostic"]) == (
        "cancelled",
        "taskbuffer",
        100,
        "wrong input",
    )


def test_a_running_job_s_pilot_is_told_to_stop_it(engine: Engine) -> None:
    (job_id,) = jobs_in(engine, S.RUNNING)
    run(engine, JobCommand("kill", [job_id]))
    job = row(engine, job_id)
    assert job["state"] == "running" and job["kill_requested_at"] is not None
    (command,) = kill_commands_for(engine, job_id)
    assert (command.command, command.job_id, command.attempt) == ("kill", job_id, 1)


def test_an_ended_job_is_left_alone(engine: Engine) -> None:
    (job_id,) = jobs_in(engine, S.FAILED)
    run(engine, JobCommand("kill", [job_id]))
    assert row(engine, job_id)["state"] == "failed"


def test_retry_by_hand_starts_the_next_attempt_of_a_failed_job(engine: Engine) -> None:
    (failed,) = jobs_in(engine, S.FAILED, max_attempts=1)
    (running,) = jobs_in(engine, S.RUNNING)
    run(engine, JobCommand("retry", [failed, running]))
    assert (row(engine, failed)["attempt"], row(engine, failed)["state"]) == (2, "activated")
    assert (row(engine, running)["attempt"], row(engine, running)["state"]) == (1, "running")


def test_unknown_jobs_are_refused(engine: Engine) -> None:
    incoming = run(engine, JobCommand("kill", ["no-such-job"]))
    assert incoming.refused == "kill: no job 'no-such-job'"
    assert incoming.refused_as == "not_found"


def test_another_users_job_cannot_be_killed_without_the_production_role(engine: Engine) -> None:
    # Given alice's running job
    (job_id,) = jobs_in(engine, S.RUNNING)
    # When bob asks to kill it
    bob = Incoming(JobCommand("kill", [job_id]), None, user_id="user.bob")
    CommandHandler(engine, Settings())([bob])
    # Then the command is refused, saying why, and the job runs on
    assert bob.refused == (
        f"kill of job {job_id} refused: user.bob does not own it (owned by {OWNER}) "
        "and has no production role"
    )
    assert row(engine, job_id)["kill_requested_at"] is None
    # When the production manager asks
    prod = Incoming(JobCommand("kill", [job_id]), None, user_id="user.prod")
    CommandHandler(engine, Settings(production_role="user.admin, user.prod"))([prod])
    # Then the pilot is told to stop it
    assert prod.refused is None and kill_commands_for(engine, job_id)
