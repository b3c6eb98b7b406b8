"""Leases of periodic work, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import Engine

from broker.store import leases
from broker.store.clock import now
from broker.store.engine import transaction

S = timedelta(seconds=1)


def test_a_lease_is_refused_to_others_until_its_time_then_taken(engine: Engine) -> None:
    # Given a lease that process A took for 10 s
    name, t = f"duty-{uuid.uuid4().hex}", now()
    with transaction(engine) as conn:
        assert leases.take(conn, name, "A", t, t + 10 * S)
        # Then B cannot take it before then, nor A again without renewing it
        assert not leases.take(conn, name, "B", t + 9 * S, t + 19 * S)
        assert not leases.take(conn, name, "A", t + 9 * S, t + 19 * S)
        # But A may renew it, and B takes it once its time is over
        assert leases.take(conn, name, "A", t + 9 * S, t + 20 * S, renew=True)
        assert not leases.take(conn, name, "B", t + 19 * S, t + 29 * S)
        assert leases.take(conn, name, "B", t + 20 * S, t + 30 * S)
        found = leases.held(conn, name)[name]
    assert (found.holder, found.runs) == ("B", 3)


def test_a_turn_given_back_is_free_after_its_period_for_a_process_with_a_shorter_one(
    engine: Engine,
) -> None:
    # Given a turn that A ran and gave back at t until a period of 60 s later
    name, t = f"duty-{uuid.uuid4().hex}", now()
    with transaction(engine) as conn:
        assert leases.take(conn, name, "A", t - 5 * S, t + 55 * S, period_s=60)
        assert leases.give_back(conn, name, "A", t, t + 60 * S)
        # Then a process with the same period waits for it
        assert not leases.take(conn, name, "B", t + 30 * S, t + 90 * S, period_s=60)
        # And one with a period of 1 s takes it a second after it was given back
        assert not leases.take(conn, name, "C", t + S / 2, t + 60 * S, period_s=1)
        assert leases.take(conn, name, "C", t + 2 * S, t + 62 * S, period_s=1)
        # While C runs it (not given back), no period frees it for another
        assert not leases.take(conn, name, "D", t + 30 * S, t + 90 * S, period_s=1)


def test_a_stopping_holder_lets_go_of_its_leases_at_once(engine: Engine) -> None:
    # Given two leases held by A for a minute
    names, t = [f"site-{uuid.uuid4().hex}" for _ in range(2)], now()
    with transaction(engine) as conn:
        for name in names:
            assert leases.take(conn, name, "A", t, t + 60 * S, renew=True)
        # When A lets go of them
        assert leases.let_go(conn, "A", t + S) >= 2
        # Then B takes them at once
        assert all(leases.take(conn, n, "B", t + S, t + 60 * S, renew=True) for n in names)
