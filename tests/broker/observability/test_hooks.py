"""The store's metrics hang on hooks that the services register as they start."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine

from broker.observability import pipeline
from broker.protocol import JobSpec
from broker.service.server import BrokerService
from broker.settings import Settings
from broker.states import JobState
from broker.store import hooks, transitions
from broker.store.clock import now
from broker.store.engine import transaction
from broker.store.jobs import insert_defined
from broker.store.transitions import Change
from ddm_bridge.bridge import DDMBridge


@pytest.fixture
def no_hooks() -> Iterator[None]:
    """A process where no service has started yet."""
    hooks.clear()
    yield
    pipeline.install()


def installed() -> bool:
    """Whether the pipeline's metrics hang on every hook."""
    return (
        pipeline.transitions_applied in hooks.HOOKS.transitions_applied
        and pipeline.new_jobs_stored in hooks.HOOKS.jobs_stored
        and pipeline.transition_refused in hooks.HOOKS.transition_refused
    )


@pytest.mark.usefixtures("no_hooks")
def test_the_broker_service_installs_the_metric_hooks_as_it_starts(engine: Engine) -> None:
    assert not installed()
    BrokerService(Settings(broker_url="memory://", database_url="sqlite://"), engine)
    assert installed()


@pytest.mark.usefixtures("no_hooks")
def test_the_ddm_bridge_installs_the_metric_hooks_as_it_starts(
    engine: Engine, tmp_path: Path
) -> None:
    assert not installed()
    bridge = DDMBridge(Settings(database_url="sqlite://", ddm_root=str(tmp_path)), engine)
    bridge.backend.stop()
    assert installed()
    pipeline.install()  # installing again hangs nothing twice
    assert hooks.HOOKS.transitions_applied.count(pipeline.transitions_applied) == 1


@pytest.mark.usefixtures("no_hooks")
def test_the_store_tells_every_observer_of_applied_and_refused_changes(engine: Engine) -> None:
    # Given an observer at each point
    seen: list[str] = []

    def applied(conn: Connection, changes: Sequence[Change], at: datetime) -> None:
        seen.extend(f"applied {c.job_id} {c.to_state}" for c in changes)

    hooks.register(
        transitions_applied=applied,
        transition_refused=lambda c: seen.append(f"refused {c.job_id} {c.to_state}"),
    )
    with transaction(engine) as conn:
        insert_defined(conn, [JobSpec(command="true", id="hooked")], now())
    # When one legal and one illegal change are applied
    with transaction(engine) as conn:
        transitions.apply(
            conn,
            [
                Change("hooked", 1, JobState.DEFINED, JobState.ASSIGNED),
                Change("hooked", 1, JobState.DEFINED, JobState.RUNNING),
            ],
            now(),
        )
    # Then each observer was told of its own
    assert seen == ["refused hooked running", "applied hooked assigned"]
