"""Batched consuming: one handler call per batch, refused messages dead-lettered,
a message that breaks the handler isolated and dead-lettered, the rest handled."""

from __future__ import annotations

import pytest
from kombu import Exchange, Queue

from broker import topology
from broker.conflicts import ATTEMPTS
from broker.errors import TransactionConflict
from broker.messaging import consumer as consumer_module
from broker.messaging.connection import connect
from broker.messaging.consumer import BatchConsumer, Incoming
from broker.messaging.publisher import Outgoing, open_publisher
from broker.protocol import JobSpec, encode
from broker.security import identity
from broker.settings import Settings
from tests.harness import wait_for


def test_a_message_that_breaks_the_handler_is_dead_lettered_alone(settings: Settings) -> None:
    # Given a queue holding good specs, one the handler chokes on, and one that is not JSON
    queue = Queue(
        "pandamq.test.consumer",
        Exchange("pandamq.test", "direct"),
        routing_key="t",
        durable=False,
        auto_delete=True,
    )
    handled: list[str] = []

    def handler(batch: list[Incoming[JobSpec]]) -> None:
        if any(i.message.command == "boom" for i in batch):
            raise ValueError("cannot handle boom")
        handled.extend(i.message.id for i in batch)

    with connect(settings) as connection:
        topology.declare(
            connection.default_channel, [queue, topology.Topology().dead_letter_queue()]
        )
        publisher = open_publisher(connection, 10, 10, identity.of(settings))
        specs = [JobSpec(command=c, id=f"j{n}") for n, c in enumerate(["a", "boom", "b"])]
        publisher.publish(
            [Outgoing("pandamq.test", "t", encode(s)) for s in specs]
            + [Outgoing("pandamq.test", "t", b"{nope")]
        )
        # When a consumer polls until everything is handled
        consumer = BatchConsumer(connection, publisher, batch_size=10)
        consumer.add(queue, JobSpec, handler)
        wait_for(
            lambda: consumer.poll(0.05) == 0 and len(handled) == 2,
            timeout_s=10,
            what="the batch to be handled",
        )
        dead = topology.Topology().dead_letter_queue().bind(connection.default_channel)
        letters = []
        while (m := dead.get(no_ack=True)) is not None:
            letters.append(m.headers[topology.REASON_HEADER])
    # Then the good ones were handled, the bad ones dead-lettered with their reasons
    assert sorted(handled) == ["j0", "j2"]
    assert len(letters) == 2
    assert any("cannot handle boom" in r for r in letters)
    assert any("not valid JSON" in r for r in letters)


def test_a_failing_batch_is_retried_one_by_one() -> None:
    # Given a handler that fails on any batch holding "boom"
    seen: list[list[str]] = []

    def handler(batch: list[Incoming[JobSpec]]) -> None:
        seen.append([i.message.command for i in batch])
        if any(i.message.command == "boom" for i in batch):
            raise ValueError("boom")

    batch = [Incoming(JobSpec(command=c, id=c), None) for c in ("a", "boom", "b")]
    # When the batch is handled
    consumer_module._handle(handler, batch)
    # Then it was tried whole, then one message at a time, and only boom is refused
    assert seen == [["a", "boom", "b"], ["a"], ["boom"], ["b"]]
    assert [i.refused is not None for i in batch] == [False, True, False]
    assert "ValueError('boom')" in str(batch[1].refused)


def test_a_batch_whose_transaction_lost_a_conflict_is_handled_again_at_once() -> None:
    # Given a handler whose first transaction the database ends as a deadlock victim
    seen: list[list[str]] = []

    def handler(batch: list[Incoming[JobSpec]]) -> None:
        seen.append([i.message.command for i in batch])
        if len(seen) == 1:
            batch[0].refuse("decided in the transaction that rolled back")
            raise TransactionConflict("deadlock detected (SQLSTATE 40P01)")

    batch = [Incoming(JobSpec(command=c, id=c), None) for c in ("a", "b")]
    # When the batch is handled
    consumer_module._handle(handler, batch)
    # Then it was run again whole, in place (no error goes up to drop the connection),
    # and nothing the rolled-back run decided is left
    assert seen == [["a", "b"], ["a", "b"]]
    assert [i.refused for i in batch] == [None, None]


def test_a_conflict_that_keeps_coming_goes_up_as_recoverable() -> None:
    # Given a handler that always loses its conflict
    calls = []

    def handler(batch: list[Incoming[JobSpec]]) -> None:
        calls.append(len(batch))
        raise TransactionConflict("could not serialize access (SQLSTATE 40001)")

    # When a batch is handled, then the conflict goes up after the tries, and the
    # batch was never split up as if a message broke the handler
    with pytest.raises(TransactionConflict):
        consumer_module._handle(handler, [Incoming(JobSpec(command=c, id=c), None) for c in "ab"])
    assert calls == [2] * ATTEMPTS
