"""A job's whole life, run on every backend (embedded and RabbitMQ + PostgreSQL)."""

from __future__ import annotations

import uuid

from broker import topology
from broker.error_codes import PilotError
from broker.messaging.connection import connect
from broker.messaging.publisher import Outgoing
from broker.metrics import CLAIMS
from broker.protocol import JobDispatch, JobEvent, JobSpec, encode
from broker.store.engine import transaction
from broker.store.sites import add_site
from tests.harness import System, dead_letters, publish, wait_for


def transitions_to(job: dict[str, object], state: str) -> int:
    return sum(t["to_state"] == state for t in job["transitions"])


def test_job_reaches_finished(system: System) -> None:
    # Given a broker and a pilot at a site
    site = system.new_site()
    system.start_broker()
    system.start_pilot(site)
    # When a job is submitted there
    (job_id,) = system.submit(JobSpec(command="echo hello", site=site))
    # Then it ends finished, having passed through every state once
    assert system.wait_final([job_id]) == {job_id: "finished"}
    job = system.job(job_id)
    path = [t["to_state"] for t in job["transitions"]]
    assert path == [
        "defined",
        "assigned",
        "activated",
        "sent",
        "starting",
        "running",
        "holding",
        "finished",
    ]
    assert job["exit_code"] == 0
    assert job["pilot_id"] and job["site"] == site


def test_failing_payload_ends_failed_with_its_exit_code(system: System) -> None:
    site = system.new_site()
    system.start_broker()
    system.start_pilot(site)
    (job_id,) = system.submit(JobSpec(command="echo broken input >&2; exit 7", site=site))
    assert system.wait_final([job_id]) == {job_id: "failed"}
    job = system.job(job_id)
    assert job["exit_code"] == 7
    assert job["error_code"] == PilotError.PAYLOAD_FAILED
    assert "broken input" in job["diagnostic"]
    assert job["attempts"][0]["exit_code"] == 7


def test_redelivered_job_is_claimed_by_exactly_one_of_two_pilots(system: System) -> None:
    # Given an activated job whose dispatch message is in its queue twice
    site = system.new_site()
    system.start_broker()
    (job_id,) = system.submit(JobSpec(command="sleep 0.2", site=site))
    wait_for(lambda: system.states([job_id]).get(job_id) == "activated", what="activation")
    duplicate = JobDispatch(job_id, 1, site, "SCORE")
    publish(
        system.settings,
        Outgoing(
            topology.JOBS_EXCHANGE, topology.job_routing_key(site, "SCORE"), encode(duplicate)
        ),
    )
    granted = CLAIMS.labels(result="granted")._value.get()
    refused = CLAIMS.labels(result="refused")._value.get()
    # When two pilots race for both deliveries
    system.start_pilot(site)
    system.start_pilot(site)
    # Then one claim is granted, one refused, and the job runs once
    assert system.wait_final([job_id]) == {job_id: "finished"}
    wait_for(
        lambda: CLAIMS.labels(result="refused")._value.get() == refused + 1,
        what="the duplicate claim to be refused",
    )
    assert CLAIMS.labels(result="granted")._value.get() == granted + 1
    job = system.job(job_id)
    assert [transitions_to(job, s) for s in ("sent", "starting", "finished")] == [1, 1, 1]


def test_resubmitting_the_same_id_creates_one_job(system: System) -> None:
    site = system.new_site()
    system.start_broker()
    system.start_pilot(site)
    spec = JobSpec(command="true", site=site, id=uuid.uuid4().hex)
    system.submit(spec)
    system.submit(spec)
    system.wait_final([spec.id])
    (other,) = system.submit(JobSpec(command="true", site=site))
    system.wait_final([other])  # the broker has handled everything before it
    assert transitions_to(system.job(spec.id), "defined") == 1


def test_job_without_a_site_goes_to_an_online_site(system: System) -> None:
    site = system.new_site()
    system.start_broker()
    (job_id,) = system.submit(JobSpec(command="true"))
    wait_for(lambda: system.states([job_id]).get(job_id) == "activated", what="activation")
    chosen = system.job(job_id)["site"]
    system.start_pilot(chosen)
    assert system.wait_final([job_id]) == {job_id: "finished"}
    assert "has the highest weight" in system.job(job_id)["transitions"][1]["reason"]
    assert site  # the catalogue had at least this online site


def test_running_job_sends_heartbeats(system: System) -> None:
    site = system.new_site()
    system.start_broker()
    system.start_pilot(site)
    (job_id,) = system.submit(JobSpec(command="sleep 1.5", site=site))
    system.wait_final([job_id])
    with system.engine.connect() as conn:
        from broker.store.schema import jobs

        row = conn.execute(jobs.select().where(jobs.c.id == job_id)).mappings().one()
    started = next(t["at"] for t in system.job(job_id)["transitions"] if t["to_state"] == "running")
    assert row["heartbeat_at"] is not None
    assert row["heartbeat_at"].isoformat()[:19] > started[:19]


def test_malformed_and_unauthorised_messages_are_dead_lettered(system: System) -> None:
    # Given a running broker and an empty dead-letter queue
    site = system.new_site()
    system.start_broker()
    dead_letters(system.settings)
    system.start_pilot(site)
    (job_id,) = system.submit(JobSpec(command="true", site=site))
    system.wait_final([job_id])
    # When it receives garbage and an event from a pilot that never claimed the job
    forged = JobEvent(uuid.uuid4().hex, job_id, 1, "intruder", "failed", 0.0, exit_code=1)
    orphan = JobSpec(command="true", id=uuid.uuid4().hex, site=site, task_id="no-such-task")
    offline = f"OFFLINE_{uuid.uuid4().hex[:6]}"
    with transaction(system.engine) as conn:
        add_site(conn, offline, "offline")
    stranded = JobSpec(command="true", id=uuid.uuid4().hex, site=offline)
    publish(
        system.settings,
        Outgoing(topology.SUBMIT_EXCHANGE, topology.SUBMIT_KEY, encode(orphan)),
        Outgoing(topology.SUBMIT_EXCHANGE, topology.SUBMIT_KEY, encode(stranded)),
        Outgoing(topology.SUBMIT_EXCHANGE, topology.SUBMIT_KEY, b"not json {"),
        Outgoing(
            topology.EVENTS_EXCHANGE, topology.event_routing_key(site, "failed"), encode(forged)
        ),
    )
    # Then both land in the dead-letter queue with a reason, and the job is untouched
    letters: list[tuple[bytes, dict[str, object]]] = []
    wait_for(
        lambda: letters.extend(dead_letters(system.settings)) or len(letters) >= 4,
        what="four dead letters",
    )
    reasons = sorted(str(h[topology.REASON_HEADER]) for _, h in letters)
    assert len(reasons) == 4, reasons
    assert any(f"site '{offline}' is offline" in r for r in reasons)
    assert any("not valid JSON" in r for r in reasons)
    assert any("did not claim" in r for r in reasons)
    assert any("task 'no-such-task' does not exist" in r for r in reasons)
    assert system.states([job_id]) == {job_id: "finished"}
    # And the broker keeps serving
    (after,) = system.submit(JobSpec(command="true", site=site))
    assert system.wait_final([after]) == {after: "finished"}


def test_the_broker_declares_its_whole_topology(system: System) -> None:
    system.start_broker()
    with connect(system.settings) as connection:
        channel = connection.default_channel
        for name in (
            topology.SUBMIT_QUEUE,
            topology.CLAIMS_QUEUE,
            topology.EVENTS_QUEUE,
            topology.DEAD_LETTER_QUEUE,
        ):
            channel.queue_declare(name, passive=True)
        for name in (
            topology.SUBMIT_EXCHANGE,
            topology.JOBS_EXCHANGE,
            topology.EVENTS_EXCHANGE,
            topology.CLAIMS_EXCHANGE,
            topology.CONTROL_EXCHANGE,
            topology.DEAD_LETTER_EXCHANGE,
        ):
            channel.exchange_declare(name, "", passive=True)


def test_a_pilot_dead_letters_a_job_message_it_cannot_read_and_goes_on(system: System) -> None:
    # Given a site queue holding a message that is not a JobDispatch, then a real job
    site = system.new_site()
    system.start_broker()
    dead_letters(system.settings)
    key = topology.job_routing_key(site, "SCORE")
    system.start_pilot(site)
    publish(system.settings, Outgoing(topology.JOBS_EXCHANGE, key, b"garbage"))
    # When the pilot takes it, Then it is dead-lettered with the reason and its queue
    letters: list[tuple[bytes, dict[str, object]]] = []
    wait_for(lambda: letters.extend(dead_letters(system.settings)) or letters, what="the letter")
    ((body, headers),) = letters
    assert body in (b"garbage", "garbage")  # py-amqp decodes utf-8 bodies to str
    assert headers["x-pandamq-queue"] == topology.job_queue_name(site, "SCORE")
    assert "JobDispatch message: not valid JSON" in str(headers[topology.REASON_HEADER])
    # And the pilot still runs jobs
    (job_id,) = system.submit(JobSpec(command="true", site=site))
    assert system.wait_final([job_id]) == {job_id: "finished"}
