"""Bad input from an allowed sender, on both backends: oversized bodies, deeply nested
JSON, other content types and absurd field values are dead-lettered with a reason and
counted; a 10 MB stderr tail is trimmed; the service keeps serving and loses nothing."""

from __future__ import annotations

import json
import pickle
import time
import uuid
from collections.abc import Iterator

import pytest
from kombu import Producer

from broker import topology
from broker.messaging.connection import connect
from broker.messaging.publisher import Outgoing
from broker.metrics import DEAD_LETTERED, FIELDS_TRIMMED
from broker.protocol import MAX_TEXT_CHARS, JobEvent, JobSpec, encode
from broker.security import identity
from broker.settings import Settings
from tests.harness import System, dead_letters, publish, wait_for

LIMIT = 11 * 1024 * 1024
#: A payload's stderr tail far longer than any diagnostic: 10 MB, ending in a marker.
STDERR_TAIL = "e" * (10 * 1024 * 1024) + "the end of stderr"
SUBMIT = (topology.SUBMIT_EXCHANGE, topology.SUBMIT_KEY)
CLAIMS = (topology.CLAIMS_EXCHANGE, topology.CLAIMS_KEY)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def limited(settings: Settings) -> Iterator[System]:
    """A running broker service that refuses bodies above ``LIMIT``."""
    system = System(settings.replace(max_message_bytes=LIMIT))
    try:
        system.start_broker()
        dead_letters(system.settings)
        yield system
    finally:
        system.close()


def raw(settings: Settings, target: tuple[str, str], body: bytes, content_type: str) -> None:
    """Publish ``body`` as it is, with ``content_type``, as a client library could."""
    with connect(settings) as connection:
        Producer(connection.channel()).publish(
            body,
            exchange=target[0],
            routing_key=target[1],
            content_type=content_type,
            content_encoding="binary",
            user_id=identity.of(settings),
        )


def counted(queue: str) -> float:
    return DEAD_LETTERED.labels(queue=queue)._value.get()  # type: ignore[no-any-return]


def absurd_messages(site: str) -> dict[tuple[str, str], list[tuple[bytes, str]]]:
    """Bodies, where they are sent, and the reason each must be refused with."""
    future = time.time() + 10 * 365 * 86400
    event = encode(JobEvent(uuid.uuid4().hex, "some-job", 1, "pilot-x", "running", future))
    unsized = json.loads(encode(JobEvent(uuid.uuid4().hex, "j", 1, "p", "finished", 1.0)))
    unsized["files"] = [dict(scope="s", name="f", guid="g", size=-5, adler32="0")]
    claim = {"job_id": "j", "attempt": 2**70, "pilot_id": "p", "site": site, "reply_to": ""}
    nested = b'{"command": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    return {
        SUBMIT: [
            (encode(JobSpec(command="x" * (LIMIT + 1))), f"refused unread: at most {LIMIT}"),
            (nested, "job spec: JSON nested too deeply"),
            (encode(JobSpec(command="true", cores=-4)), "field 'cores' must be at least 1"),
            (b'{"command": "true", "priority": NaN}', "NaN is not a JSON number"),
        ],
        (topology.EVENTS_EXCHANGE, topology.event_routing_key(site, "running")): [
            (event, "field 'time' must be a time (seconds since 1970) at most 3600 s ahead"),
        ],
        (topology.EVENTS_EXCHANGE, topology.event_routing_key(site, "finished")): [
            (json.dumps(unsized).encode(), "field 'size' must be at least 0, got -5"),
        ],
        CLAIMS: [(json.dumps(claim).encode(), "field 'attempt' is out of range")],
    }


def test_bad_input_is_dead_lettered_and_counted_and_the_service_keeps_serving(
    limited: System,
) -> None:
    # Given a running broker service with a site, and its dead-letter counts
    system = limited
    site = system.new_site()
    messages = absurd_messages(site)
    queues = (topology.SUBMIT_QUEUE, topology.EVENTS_QUEUE, topology.CLAIMS_QUEUE)
    before = {q: counted(q) for q in queues}
    # When an allowed sender publishes bodies too big, too deep, pickled or absurd
    for target, bodies in messages.items():
        publish(system.settings, *(Outgoing(*target, body) for body, _ in bodies))
    pickled = pickle.dumps({"command": "true"})
    raw(system.settings, SUBMIT, pickled, "application/x-python-serialize")
    # Then each is dead-lettered with its reason, and counted on its queue
    expected = [why for bodies in messages.values() for _, why in bodies]
    expected.append("content type 'application/x-python-serialize' refused")
    letters: list[str] = []
    wait_for(
        lambda: (
            letters.extend(str(h[topology.REASON_HEADER]) for _, h in dead_letters(system.settings))
            or len(letters) >= len(expected)
        ),
        what=f"{len(expected)} dead letters",
    )
    assert len(letters) == len(expected), letters
    for why in expected:
        assert any(why in reason for reason in letters), (why, letters)
    assert counted(topology.SUBMIT_QUEUE) - before[topology.SUBMIT_QUEUE] == 5
    assert counted(topology.EVENTS_QUEUE) - before[topology.EVENTS_QUEUE] == 2
    assert counted(topology.CLAIMS_QUEUE) - before[topology.CLAIMS_QUEUE] == 1
    # And the service still serves: a job submitted after them runs on a pilot
    pilot = system.start_pilot(site)
    (job_id,) = system.submit(JobSpec(command="sleep 60", site=site, max_attempts=1))
    wait_for(lambda: system.states([job_id]).get(job_id) == "running", what="the job to run")
    # And its pilot's failure with a 10 MB stderr tail is taken, the tail trimmed to its end
    trimmed = FIELDS_TRIMMED.labels(queue=topology.EVENTS_QUEUE, field="diagnostic")
    trimmed_before = trimmed._value.get()
    failed = JobEvent(
        uuid.uuid4().hex, job_id, 1, pilot.pilot_id, "failed", time.time(), 1, 1, STDERR_TAIL
    )
    key = topology.event_routing_key(site, "failed")
    publish(system.settings, Outgoing(topology.EVENTS_EXCHANGE, key, encode(failed)))
    assert system.wait_final([job_id]) == {job_id: "failed"}
    attempt = system.job(job_id)["attempts"][0]
    assert len(attempt["diagnostic"]) == MAX_TEXT_CHARS
    assert attempt["diagnostic"].endswith("the end of stderr")
    assert trimmed._value.get() == trimmed_before + 1
