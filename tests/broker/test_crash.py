"""A broker process killed between its SQL commit and its ack loses and duplicates nothing.

``PANDAMQ_FAILPOINT=after-commit:<queue>`` makes ``pandamq serve`` SIGKILL
itself right after committing a batch from that queue, before acking it, so
RabbitMQ redelivers the batch to the next broker process.
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker import topology
from broker.messaging.connection import connect
from broker.settings import Settings
from tests.cli.processes import LIFE, Pandamq, pandamq_processes

pytestmark = pytest.mark.services

JOBS = 3


@pytest.fixture
def processes(services: tuple[str, str], tmp_path: Path) -> Iterator[Pandamq]:
    """Runs ``pandamq`` on this session's vhost and database; kills leftovers afterwards."""
    with pandamq_processes(services, tmp_path) as p:
        yield p


def dead_letters_about(broker_url: str, ids: list[str]) -> list[str]:
    """Take the dead-letter queue; the reasons given for messages that name one of ``ids``."""
    reasons = []
    with connect(Settings(broker_url=broker_url)) as connection:
        queue = topology.Topology().dead_letter_queue().bind(connection.default_channel)
        while (message := queue.get(no_ack=True)) is not None:
            body = message.body
            text = body.decode(errors="replace") if isinstance(body, bytes) else str(body)
            if any(job_id in text for job_id in ids):
                reasons.append(str(message.headers.get(topology.REASON_HEADER)))
    return reasons


@pytest.mark.parametrize(
    "queue", [topology.SUBMIT_QUEUE, topology.CLAIMS_QUEUE, topology.EVENTS_QUEUE]
)
def test_broker_killed_after_commit_before_ack_loses_and_duplicates_nothing(
    services: tuple[str, str], processes: Pandamq, queue: str
) -> None:
    # Given a broker service that dies right after committing its first batch from `queue`
    site = processes.new_site()
    doomed = processes.start("serve", env={"PANDAMQ_FAILPOINT": f"after-commit:{queue}"})
    pilot = processes.start("pilot", "--site", site, "--heartbeat-interval", "1")
    # When jobs are submitted
    ids = processes.publish([{"command": "true", "site": site}] * JOBS)
    # Then the broker service is killed by its failpoint
    assert doomed.wait(timeout_s=60) == -signal.SIGKILL, doomed.log()
    assert f"failpoint after-commit:{queue}" in doomed.log()
    # When a broker service starts again, without the failpoint
    processes.start("serve")
    # Then every job finishes
    processes.wait_states(ids, ["finished"] * JOBS)
    # And exactly these jobs exist, each with one attempt that passed each state once
    listed = processes.json("jobs", "--site", site)
    assert sorted(j["id"] for j in listed) == sorted(ids)
    for job_id in ids:
        job = processes.json("job", job_id)
        assert Counter(t["to_state"] for t in job["transitions"]) == Counter(LIFE), job
        assert [a["attempt"] for a in job["attempts"]] == [1], job["attempts"]
    # And no redelivered message was refused as if it were bad
    assert dead_letters_about(services[0], ids) == []
    # And the pilot ran each job once
    assert pilot.stop() == 0, pilot.log()
    assert f"ran {JOBS} job(s)" in pilot.output()
