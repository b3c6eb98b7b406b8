"""Several service processes of each kind against one PostgreSQL database: periodic
work is done once per period, a killed holder's duties are taken over within a
bound, and two DDM bridges make one copy of each file of a subscription."""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from broker.settings import Settings
from broker.store import leases, subscriptions
from broker.store.clock import now
from broker.store.engine import open_engine, transaction
from broker.store.schema import subscriptions as subscriptions_table
from tests.cli.processes import READY, Pandamq, Service
from tests.ddm_bridge.files import put_file
from tests.harness import wait_for
from tests.services import postgres_database

#: The broker's periodic duties, each every second, and a lease a killed holder loses fast.
PERIOD_S = 1.0
LEASE_S = 3.0
DUTIES = ("watchdog", "user-priorities", "rebrokerage", "statistics")
ENV = {
    "PANDAMQ_WATCHDOG_INTERVAL_S": str(PERIOD_S),
    "PANDAMQ_BROKERAGE_INTERVAL_S": str(PERIOD_S),
    "PANDAMQ_STATISTICS_INTERVAL_S": str(PERIOD_S),
    "PANDAMQ_LEASE_S": str(LEASE_S),
}


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    """A database of these tests' own: a bridge serves every subscription in progress,
    and other tests' processes leave some behind in the session's database."""
    with postgres_database() as url:
        yield url


@pytest.fixture
def pandamq(services: tuple[str, str], database_url: str, tmp_path: Path) -> Iterator[Pandamq]:
    p = Pandamq(services[0], database_url, tmp_path)
    p.env |= ENV
    p.run("db", "upgrade")
    yield p
    p.close()


@pytest.fixture
def engine(pandamq: Pandamq) -> Iterator[Engine]:
    e = open_engine(pandamq.database_url)
    yield e
    e.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """A service process with its own metrics port."""

    def __init__(self, p: Pandamq, kind: str) -> None:
        self.port = free_port()
        self.service: Service = p.start("serve", kind, "--metrics-port", str(self.port))

    @property
    def pid(self) -> int:
        return self.service.popen.pid

    def counter(self, name: str, **labels: str) -> float:
        """The value of a counter in its /metrics (0 if not there yet)."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        found = re.search(rf"^{name}\{{{re.escape(wanted)}\}} (\S+)$", text, re.M)
        return float(found.group(1)) if found else 0.0


def runs(engine: Engine) -> dict[str, tuple[str, int]]:
    """Each duty's lease: (holder, times taken)."""
    with transaction(engine) as conn:
        return {name: (lease.holder, lease.runs) for name, lease in leases.held(conn).items()}


def turns(engine: Engine, seconds: float) -> dict[str, dict[datetime, tuple[str, datetime]]]:
    """Each duty's turns seen over ``seconds`` (sampled every 0.1 s, shorter than a
    period): by the time it was taken, its holder and the time it was held until, last
    seen (once given back: the end of the pass plus a period)."""
    seen: dict[str, dict[datetime, tuple[str, datetime]]] = {d: {} for d in DUTIES}
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        with transaction(engine) as conn:
            for duty, lease in leases.held(conn).items():
                if duty in seen:
                    seen[duty][lease.taken_at] = (lease.holder, lease.until)
        time.sleep(0.1)
    return seen


def holder_pid(holder: str) -> int:
    """The process id in a holder's name (``host:pid:service:tag``)."""
    return int(holder.split(":")[1])


def brokers(p: Pandamq, n: int) -> list[Served]:
    started = [Served(p, "broker") for _ in range(n)]
    for b in started:
        b.service.wait_logged(READY)
    return started


@pytest.mark.timeout(120)
def test_three_broker_processes_run_each_duty_once_per_period(
    pandamq: Pandamq, engine: Engine
) -> None:
    # Given three broker processes on one database, each duty due every second (earlier
    # tests' processes may have taken turns already)
    earlier = runs(engine)
    three = brokers(pandamq, 3)
    wait_for(lambda: set(DUTIES) <= set(runs(engine)), what="every duty run once")
    # When they run side by side for a while
    before = runs(engine)
    seen = turns(engine, 10.0)
    after = runs(engine)
    # Then no turn of a duty started before a period had passed since the last one ended
    # (it is never run twice in a period), and each started within a quarter period
    # more (its attempts' interval) and some slack for a loaded machine
    for duty, taken in seen.items():
        starts = sorted(taken)
        assert len(starts) >= 4, (duty, starts)
        for first, second in itertools.pairwise(starts):
            ended = taken[first][1] - timedelta(seconds=PERIOD_S)
            gap = (second - ended).total_seconds()
            assert PERIOD_S <= gap <= 1.25 * PERIOD_S + 1.0, (duty, first, second, gap)
        # And every turn taken is one the table counted
        assert after[duty][1] - before[duty][1] >= len(starts) - 1
    # And the processes' own counts add up to the table's (read before and after them:
    # the processes go on taking turns)
    for duty in DUTIES:
        first = runs(engine)[duty][1]
        counted = sum(b.counter("pandamq_duty_runs_total", duty=duty) for b in three)
        last = runs(engine)[duty][1]
        ran_before = earlier.get(duty, ("", 0))[1]
        assert first - ran_before <= counted <= last - ran_before, (duty, counted)
    # And the turns went to these processes only
    pids = {b.pid for b in three}
    assert {holder_pid(h) for taken in seen.values() for h, _ in taken.values()} <= pids


@pytest.mark.timeout(120)
def test_a_killed_brokers_duties_are_taken_over_within_the_lease(
    pandamq: Pandamq, engine: Engine
) -> None:
    # Given two broker processes running the duties
    two = brokers(pandamq, 2)
    pids = {b.pid for b in two}
    # (the leases of an earlier test's brokers are in the module's database too)
    wait_for(
        lambda: all(
            d in held and holder_pid(held[d][0]) in pids for held in [runs(engine)] for d in DUTIES
        ),
        what="every duty run once by one of them",
    )
    # When the process holding the watchdog is killed with SIGKILL
    holder, taken = runs(engine)["watchdog"]
    (victim,) = [b for b in two if b.pid == holder_pid(holder)]
    os.kill(victim.pid, signal.SIGKILL)
    victim.service.wait(10)
    killed_at = time.monotonic()
    (survivor,) = [b for b in two if b is not victim]
    # Then the other process runs every duty again, within a lease and a period
    for duty in DUTIES:
        wait_for(
            lambda d=duty: holder_pid(runs(engine)[d][0]) == survivor.pid,  # type: ignore[misc]
            timeout_s=LEASE_S + 2 * PERIOD_S + 5,
            what=f"{duty} taken over",
        )
    took = time.monotonic() - killed_at
    assert took <= LEASE_S + 2 * PERIOD_S + 5
    assert runs(engine)["watchdog"][1] > taken


def copies(bridges: list[Served]) -> float:
    return sum(b.counter("pandamq_file_copies_total", result="verified") for b in bridges)


def subscribe(p: Pandamq, engine: Engine, files: int, datasets: int) -> str:
    """Datasets of ``files`` files each at a new site, each subscribed to another new
    site; that site."""
    settings = Settings.load(environ=p.env)
    source, target = p.new_site(), p.new_site()
    names = [f"in.{uuid.uuid4().hex}" for _ in range(datasets)]
    for name in names:
        for i in range(files):
            put_file(settings, engine, name, source, b"%d" % i)
    with transaction(engine) as conn:
        for name in names:
            subscriptions.create(conn, name, target, files, now())
    return target


def states_at(engine: Engine, site: str) -> dict[str, str]:
    t = subscriptions_table
    with transaction(engine) as conn:
        rows = conn.execute(select(t.c.dataset, t.c.state).where(t.c.site == site))
        return {r.dataset: r.state for r in rows}


@pytest.mark.timeout(240)
def test_two_ddm_bridges_copy_each_file_of_a_subscription_once(
    pandamq: Pandamq, engine: Engine
) -> None:
    # Given two DDM bridges on one database
    bridges = [Served(pandamq, "ddm") for _ in range(2)]
    for b in bridges:
        b.service.wait_logged("ddm bridge ready")
    # When 6 datasets of 4 files each are subscribed to a site
    target = subscribe(pandamq, engine, files=4, datasets=6)
    # Then every subscription is done, and 24 copies were made in all
    wait_for(
        lambda: set(states_at(engine, target).values()) == {"done"},
        timeout_s=120,
        what="subscriptions done",
    )
    wait_for(lambda: copies(bridges) >= 24, what="both bridges' counts")
    assert copies(bridges) == 24


@pytest.mark.timeout(240)
def test_a_killed_bridges_subscriptions_are_taken_over_within_the_lease(
    pandamq: Pandamq, engine: Engine
) -> None:
    # Given two DDM bridges whose copies each take a while
    pandamq.env["PANDAMQ_TRANSFER_DELAY_S"] = "0.5"
    bridges = [Served(pandamq, "ddm") for _ in range(2)]
    for b in bridges:
        b.service.wait_logged("ddm bridge ready")
    target = subscribe(pandamq, engine, files=3, datasets=4)
    # When a bridge serving some of them is killed with SIGKILL mid-copy
    t = subscriptions_table

    def served_by() -> set[str]:
        with transaction(engine) as conn:
            return set(conn.scalars(select(t.c.bridge).where(t.c.site == target)))

    serving = wait_for(
        lambda: {h for h in served_by() if h}, timeout_s=60, what="subscriptions served"
    )
    victim = next(b for b in bridges if b.pid in {holder_pid(h) for h in serving})
    os.kill(victim.pid, signal.SIGKILL)
    victim.service.wait(10)
    killed_at = time.monotonic()
    # Then the other bridge ends every subscription, within the lease and the copies left
    wait_for(
        lambda: set(states_at(engine, target).values()) == {"done"},
        timeout_s=LEASE_S + 30,
        what="subscriptions done",
    )
    assert time.monotonic() - killed_at <= LEASE_S + 30
