"""The query service under bad input: every bad request gets a clear error answer and
is counted, an asker that went away costs nothing, and the service keeps serving."""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from broker import topology
from broker.api import Answer, Query
from broker.client import Client
from broker.messaging.publisher import Outgoing
from broker.metrics import REQUESTS
from broker.protocol import encode
from tests.cli.processes import Pandamq, pandamq_processes
from tests.conftest import test_settings
from tests.harness import System, dead_letters, wait_for


def _ask(client: Client, body: bytes) -> Answer:
    (answer,) = client._ask(
        [Outgoing(topology.QUERIES_EXCHANGE, topology.QUERIES_KEY, body, persistent=False)]
    )
    return answer


def _refused(kind: str) -> float:
    return REQUESTS.labels(queue=topology.QUERIES_QUEUE, outcome=kind)._value.get()


BAD = {
    "not json": (b"{nope", "not valid JSON"),
    "not an object": (b"[1, 2]", "expected a JSON object"),
    "unknown field": (b'{"what": "jobs", "colour": "red"}', "unknown field(s) 'colour'"),
    "unknown kind": (b'{"what": "everything"}', "field 'what' must be one of"),
    "10 MB filter": (
        encode(Query("jobs", site="x" * 10_000_000)),
        "refused unread: at most 524288",
    ),
    "long filter": (encode(Query("jobs", site="x" * 300)), "at most 256"),
    "limit": (b'{"what": "jobs", "limit": 0}', "field 'limit' must be 1-10000"),
}


@pytest.mark.parametrize("case", BAD.values(), ids=BAD.keys())
def test_a_bad_request_gets_an_error_answer_and_the_service_keeps_serving(
    client: Client, system: System, case: tuple[bytes, str]
) -> None:
    # Given a running service
    body, words = case
    before = _refused("bad_input")
    # When a bad request is sent
    answer = _ask(client, body)
    # Then it is answered with the reason, and counted; nothing is dead-lettered
    assert not answer.ok and answer.error_kind == "bad_input"
    assert words in answer.error, answer.error
    assert _refused("bad_input") == before + 1
    assert dead_letters(system.settings) == []
    # And the next query is answered
    assert isinstance(client.jobs(limit=1).jobs, list)


def test_unknown_records_are_not_found(client: Client) -> None:
    before = _refused("not_found")
    for query in (Query("job", id="nope"), Query("task", id="nope"), Query("dataset", id="nope")):
        answer = _ask(client, encode(query))
        assert (answer.ok, answer.error_kind) == (False, "not_found")
        assert "'nope'" in answer.error
    assert _refused("not_found") == before + 3


def test_an_asker_that_went_away_costs_nothing(client: Client, system: System) -> None:
    # Given requests from an asker that closes its connection before the answers come
    with Client(system.settings) as gone:
        gone._open()
        assert gone._requests is not None
        body = encode(Query("jobs", limit=1000))
        out = Outgoing(topology.QUERIES_EXCHANGE, topology.QUERIES_KEY, body, persistent=False)
        gone._requests.send([out] * 20, timeout_s=10)
    before = REQUESTS.labels(queue=topology.QUERIES_QUEUE, outcome="answered")._value.get()
    # When another asker asks, then it is answered after them, and nothing was dead-lettered
    client.jobs(limit=1)
    after = REQUESTS.labels(queue=topology.QUERIES_QUEUE, outcome="answered")._value.get()
    assert after - before == 21
    assert dead_letters(system.settings) == []


def test_on_rabbitmq_queries_are_answered_by_a_process_of_their_own(
    services: tuple[str, str], tmp_path: Path
) -> None:
    # Given a broker service on RabbitMQ with the default: queries in their own process
    settings = replace(test_settings(*services, tmp_path), query_process=True)
    system = System(settings)
    try:
        system.start_broker()
        # When a submitter asks
        with Client(settings) as c:
            page = c.jobs(limit=1)
        # Then it is answered, by a child process of the service
        assert isinstance(page.jobs, list)
        assert "pandamq-queries" in [p.name for p in multiprocessing.active_children()]
    finally:
        system.close()
    # And the process ends with the service
    wait_for(
        lambda: "pandamq-queries" not in [p.name for p in multiprocessing.active_children()],
        what="the query process to end",
    )


@pytest.fixture
def processes(services: tuple[str, str], tmp_path: Path) -> Iterator[Pandamq]:
    """Runs ``pandamq`` on this session's vhost and database; kills leftovers afterwards."""
    with pandamq_processes(services, tmp_path) as p:
        yield p


def test_the_query_process_of_a_killed_broker_service_ends_too(processes: Pandamq) -> None:
    # Given `pandamq serve broker` on RabbitMQ, with its query process
    processes.new_site()
    serve = processes.start("serve", "broker")
    started = wait_for(lambda: QUERY_PROCESS.search(serve.log()), what="the query process")
    child = int(started.group(1))
    # When the broker service is killed with SIGKILL (it can tell its child nothing)
    serve.popen.send_signal(signal.SIGKILL)
    assert serve.wait(timeout_s=10) == -signal.SIGKILL
    # Then the query process sees its parent gone and ends by itself
    wait_for(lambda: not _alive(child), what=f"query process {child} to end")


QUERY_PROCESS = re.compile(r"query service started in process (\d+)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
