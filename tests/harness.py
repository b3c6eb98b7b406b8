"""A whole pandamq system inside the test process: broker service and pilots as threads."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from amqp.exceptions import NotFound
from sqlalchemy import Engine

from broker import topology
from broker.messaging.connection import connect
from broker.messaging.publisher import Outgoing, open_publisher
from broker.protocol import JobSpec
from broker.security import identity
from broker.service.server import BrokerService
from broker.settings import Settings
from broker.states import FINAL_STATES
from broker.store.engine import open_engine, transaction
from broker.store.jobs import get_job, states_of
from broker.store.migrate import upgrade
from broker.store.sites import add_site
from cli.benchmark.submissions import publish_specs
from ddm_bridge.backend import DDMBackend
from ddm_bridge.bridge import DDMBridge
from pilot_agent.agent import Pilot, Slot
from tests.budget import capped


def wait_for(condition: Callable[[], Any], timeout_s: float = 30.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it is truthy; fail the test after ``timeout_s``, or sooner
    if the test's own budget has less left (tests/budget.py)."""
    timeout_s = capped(timeout_s)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def publish(settings: Settings, *messages: Outgoing) -> None:
    """Publish raw messages with confirms, as any client could."""
    with connect(settings) as connection:
        open_publisher(connection, 10, 10, identity.of(settings)).publish(messages)


def queue_depth(settings: Settings, name: str) -> int:
    """Messages ready in a queue; 0 while no process has declared it yet (the broker
    service declares a site's queues once it is up, which may come after a first look)."""
    with connect(settings) as connection:
        try:
            return int(connection.default_channel.queue_declare(name, passive=True).message_count)
        except NotFound:
            return 0


def dead_letters(settings: Settings) -> list[tuple[bytes, dict[str, object]]]:
    """Take every message in the dead-letter queue: (body, headers)."""
    taken = []
    with connect(settings) as connection:
        queue = topology.Topology().dead_letter_queue().bind(connection.default_channel)
        while (message := queue.get(no_ack=True)) is not None:
            taken.append((message.body, message.headers))
    return taken


class _Thread(threading.Thread):
    def __init__(self, name: str, target: Callable[[], Any]) -> None:
        super().__init__(name=name, daemon=True)
        self._fn = target
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as exc:
            self.error = exc


class System:
    """Broker and pilots of one test; every thread is stopped and checked at the end."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine: Engine = open_engine(settings.database_url)
        upgrade(self.engine)
        self.stop = threading.Event()
        self.threads: list[_Thread] = []
        self.bridges: list[DDMBridge] = []

    def new_site(self) -> str:
        """A site with a name no other test uses, so its queues are this test's own."""
        return self.add_site(f"SITE_{uuid.uuid4().hex[:8].upper()}")

    def add_site(self, name: str) -> str:
        """The site ``name``, added unless it is there already."""
        with transaction(self.engine) as conn:
            add_site(conn, name)
        return name

    def start_broker(self) -> None:
        """Start one broker service thread and wait until it is consuming."""
        ready = threading.Event()
        service = BrokerService(self.settings, self.engine)
        thread = self._start("broker", lambda: service.run(self.stop, ready))
        wait_for(lambda: ready.is_set() or thread.error, what="broker ready")
        self._raise_errors()

    def start_bridge(self, backend: DDMBackend | None = None) -> DDMBridge:
        """Start a DDM bridge thread and wait until it is serving."""
        ready = threading.Event()
        bridge = DDMBridge(self.settings, self.engine, backend)
        thread = self._start("ddm-bridge", lambda: bridge.run(self.stop, ready))
        wait_for(lambda: ready.is_set() or thread.error, what="ddm bridge ready")
        self._raise_errors()
        self.bridges.append(bridge)
        return bridge

    def start_pilot(
        self,
        site: str,
        max_jobs: int | None = None,
        settings: Settings | None = None,
        **slot: int,
    ) -> Pilot:
        """Start a pilot thread for ``site`` (with its own ``settings``, e.g. its certificate),
        and a DDM bridge if none runs: the bridge registers what the pilot's jobs write
        and moves them on from ``holding``."""
        if not self.bridges:
            self.start_bridge()
        pilot = Pilot(settings or self.settings, Slot(site, **slot), max_jobs=max_jobs)
        self._start(f"pilot-{pilot.pilot_id}", lambda: pilot.run(self.stop))
        return pilot

    def _start(self, name: str, target: Callable[[], Any]) -> _Thread:
        thread = _Thread(name, target)
        thread.start()
        self.threads.append(thread)
        return thread

    def submit(self, *specs: JobSpec) -> list[str]:
        """Publish specs (ids filled in) as the CLI does; their ids."""
        filled = [s if s.id else JobSpec(**{**s.__dict__, "id": uuid.uuid4().hex}) for s in specs]
        publish_specs(self.settings, filled)
        return [s.id for s in filled]

    def wait_final(self, ids: list[str], timeout_s: float = 60.0) -> dict[str, str]:
        """Every job's final state; fails the test if any is not final in time."""

        def final() -> dict[str, str] | None:
            self._raise_errors()
            states = self.states(ids)
            done = len(states) == len(ids) and all(s in FINAL_STATES for s in states.values())
            return states if done else None

        try:
            states = wait_for(final, timeout_s, "jobs final")
        except AssertionError:
            states = self.states(ids)
        pending = {i: s for i, s in states.items() if s not in FINAL_STATES}
        assert len(states) == len(ids) and not pending, f"jobs not final: {pending or states}"
        return states

    def states(self, ids: list[str]) -> dict[str, str]:
        """Current states."""
        with transaction(self.engine) as conn:
            return states_of(conn, ids)

    def job(self, job_id: str) -> dict[str, Any]:
        """A job with its history, as ``pandamq job`` shows it."""
        with transaction(self.engine) as conn:
            return get_job(conn, job_id)

    def _raise_errors(self) -> None:
        for thread in self.threads:
            if thread.error is not None:
                raise AssertionError(f"{thread.name} failed") from thread.error

    def close(self) -> None:
        """Stop every thread; fail if one crashed or hangs."""
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=20)
            assert not thread.is_alive(), f"{thread.name} did not stop"
        self._raise_errors()
        self.engine.dispose()
