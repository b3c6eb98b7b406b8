"""The outbox relay: after a batch it looks only if this process wrote to the outbox;
its sweep takes what any process wrote."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Engine, insert

from broker.messaging.publisher import Outgoing
from broker.service.relay import OutboxRelay
from broker.store import outbox
from broker.store.clock import now
from broker.store.engine import transaction
from broker.store.schema import outbox as outbox_table


class Recorder:
    """A publisher that keeps what it is given; the relay's choices are under test here."""

    def __init__(self) -> None:
        self.published: list[Outgoing] = []

    def publish(self, messages: Iterable[Outgoing]) -> int:
        taken = list(messages)
        self.published += taken
        return len(taken)


def test_rows_of_another_process_wait_for_the_sweep_own_rows_go_at_once(engine: Engine) -> None:
    # Given a relay that has swept an empty outbox (other tests may have left rows)
    recorder = Recorder()
    relay = OutboxRelay(engine, recorder, 100)
    relay.relay()
    recorder.published.clear()
    # When another process writes a row (straight into the table, not through this
    # process's outbox.put), Then relaying this process's own rows leaves it there
    theirs = Outgoing("ex", "theirs", b'{"n": 1}')
    with transaction(engine) as conn:
        conn.execute(
            insert(outbox_table),
            [
                {
                    "exchange": "ex",
                    "routing_key": "theirs",
                    "mandatory": True,
                    "body": '{"n": 1}',
                    "created_at": now(),
                }
            ],
        )
    assert relay.relay_own() == 0
    # And the sweep publishes it
    assert relay.relay() == 1
    assert recorder.published == [theirs]
    # When this process writes a row, Then relaying its own rows publishes it
    ours = Outgoing("ex", "ours", b'{"n": 2}')
    with transaction(engine) as conn:
        outbox.put(conn, [ours])
    assert relay.relay_own() == 1
    assert recorder.published == [theirs, ours]
    # And with nothing new written, there is nothing more to relay
    assert relay.relay_own() == 0
