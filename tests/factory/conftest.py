"""Fixtures of the pilot factory tests: settings on RabbitMQ, and a factory in a thread."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select

from broker.factory.factory import PilotFactory
from broker.factory.pilots import queued_work
from broker.factory.submitter import LIVE_STATES, Submitter
from broker.settings import Settings
from broker.store.engine import transaction
from broker.store.schema import pilots
from tests.conftest import test_settings
from tests.harness import System, wait_for


@pytest.fixture(params=["sqlite", "postgresql"])
def rabbitmq_settings(
    request: pytest.FixtureRequest, services: tuple[str, str], tmp_path: Path
) -> Settings:
    """Pilots run as processes of their own, so RabbitMQ always; SQLite or PostgreSQL."""
    broker_url, database_url = services
    if request.param == "sqlite":
        database_url = f"sqlite:///{tmp_path / 'pandamq.sqlite'}"
    return test_settings(broker_url, database_url, tmp_path).replace(
        factory_interval_s=0.2, factory_pilot_idle_s=2.0
    )


class FactoryThread:
    """A pilot factory running in a thread of the test; its pilots are ended afterwards."""

    def __init__(self, system: System, submitter: Submitter, site: str) -> None:
        self.system = system
        self.site = site
        self.submitter = submitter
        self.factory = PilotFactory(system.settings, system.engine, submitter, [site])
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self.factory.run, args=(self.stop,), daemon=True)

    def start(self) -> None:
        """Start the factory's cycles, and a DDM bridge if none runs (it moves the jobs of
        the factory's pilots on from ``holding``)."""
        if not self.system.bridges:
            self.system.start_bridge()
        self._thread.start()

    def halt(self) -> None:
        """Stop the factory's cycles (its pilots go on)."""
        self.stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the pilot factory did not stop"

    def pilots(self) -> list[dict[str, object]]:
        """The site's pilot rows."""
        with transaction(self.system.engine) as conn:
            rows = conn.execute(select(pilots).where(pilots.c.site == self.site)).mappings()
            return [dict(r) for r in rows]

    def count(self, *states: str) -> int:
        """How many of the site's pilots are in ``states``."""
        query = select(func.count()).where(pilots.c.site == self.site, pilots.c.state.in_(states))
        with transaction(self.system.engine) as conn:
            return int(conn.execute(query).scalar_one())

    def activated(self) -> int:
        """The site's activated jobs, as the factory reads them."""
        with transaction(self.system.engine) as conn:
            return sum(w.jobs for w in queued_work(conn, self.site).values())

    def wait_all_ended(self, timeout_s: float = 60.0) -> None:
        """Let cycles run until no pilot of the site is live."""
        wait_for(lambda: self.count(*LIVE_STATES) == 0, timeout_s, "every pilot to end")

    def end_leftovers(self) -> None:
        """Cancel pilots still live (a failed test), and wait until they are gone."""
        live = [p["batch_id"] for p in self.pilots() if p["state"] in LIVE_STATES]
        ids = [str(b) for b in live if b]
        if ids:
            self.submitter.cancel(ids)
            wait_for(lambda: not self.submitter.poll(ids) or _all_ended(self.submitter, ids), 60)


def _all_ended(submitter: Submitter, ids: list[str]) -> bool:
    return all(s.state not in LIVE_STATES for s in submitter.poll(ids).values())
