"""Backends for the contract tests: the embedded defaults and the machine's services.

``backend`` runs a test twice: on (memory://, SQLite) and on (RabbitMQ,
PostgreSQL). The services get a vhost and a database of this session's own,
dropped at the end, so concurrent runs never see each other's queues or rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kombu.transport import memory
from sqlalchemy import Engine

from broker.client import Client
from broker.observability import pipeline
from broker.settings import Settings
from broker.store.engine import open_engine
from broker.store.migrate import upgrade
from tests import budget as budgets
from tests.budget import Budget
from tests.harness import System
from tests.nodes import PostgresCluster, RabbitMQNode
from tests.services import postgres_database, rabbitmq_vhost
from tests.tls import TlsRabbitMQNode

#: The default SE and work directories, in the directory pytest runs in.
DEFAULT_DIRECTORIES = ("pandamq-se", "pandamq-work")


@pytest.fixture(autouse=True)
def metric_hooks() -> None:
    """The store's metric hooks, as every service installs them at start
    (tests/broker/observability/test_hooks.py checks that they do)."""
    pipeline.install()


@pytest.fixture(scope="session", autouse=True)
def no_default_directories() -> Iterator[None]:
    """Fail the run if a test leaves the default SE or work directory where pytest runs
    (a process started without ``ddm_root`` and ``work_dir``: tests keep theirs in tmp_path)."""
    before = {d for d in DEFAULT_DIRECTORIES if Path(d).exists()}
    yield
    left = sorted({d for d in DEFAULT_DIRECTORIES if Path(d).exists()} - before)
    assert not left, f"a test left {left} in {Path.cwd()}: give its processes a tmp_path"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Start the test's time budget: its timeout counts from its setup (tests/budget.py)."""
    budgets.begin(item)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """The teardown's waits get the part of the timeout kept back for them."""
    budgets.end()


@pytest.fixture
def budget() -> Budget:
    """What is left of this test's timeout, for its waits."""
    return budgets.current()


@pytest.fixture(scope="session")
def services() -> Iterator[tuple[str, str]]:
    """(broker URL, database URL) on this machine's RabbitMQ and PostgreSQL."""
    with rabbitmq_vhost() as broker_url, postgres_database() as database_url:
        yield broker_url, database_url


def _fresh_memory_transport() -> None:
    memory.Transport.global_state.clear()
    memory.Channel.queues.clear()
    memory.Channel.events.clear()


def test_settings(broker_url: str, database_url: str, tmp_path: Path) -> Settings:
    """Settings for a test: fast heartbeats and claims, work in ``tmp_path``."""
    return Settings(
        broker_url=broker_url,
        database_url=database_url,
        heartbeat_interval_s=0.3,
        claim_timeout_s=10.0,
        confirm_timeout_s=10.0,
        poll_interval_s=0.02,
        work_dir=str(tmp_path / "work"),
        ddm_root=str(tmp_path / "se"),
        # A process per test's broker would cost a second each; the process is
        # tested on its own, and by every test that runs `pandamq serve`.
        query_process=False,
        # Retries set up at once; tests of the backoff ask for one.
        retry_backoff_s=0.0,
    )


test_settings.__test__ = False


@pytest.fixture(params=["embedded", "services"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """The same test on the embedded defaults and on RabbitMQ + PostgreSQL."""
    if request.param == "embedded":
        _fresh_memory_transport()
        return test_settings("memory://", f"sqlite:///{tmp_path / 'pandamq.sqlite'}", tmp_path)
    broker_url, database_url = request.getfixturevalue("services")
    return test_settings(broker_url, database_url, tmp_path)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated database of each kind: SQLite, and this session's PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    else:
        url = request.getfixturevalue("services")[1]
    e = open_engine(url)
    upgrade(e)
    yield e
    e.dispose()


@pytest.fixture
def system(settings: Settings) -> Iterator[System]:
    """A pandamq system in this process; stopped and checked after the test."""
    s = System(settings)
    yield s
    s.close()


@pytest.fixture
def client(system: System) -> Iterator[Client]:
    """A submitter's client of a running broker service of ``system``."""
    system.start_broker()
    with Client(system.settings) as c:
        yield c


@pytest.fixture(scope="session")
def rabbitmq_node() -> Iterator[RabbitMQNode]:
    """A RabbitMQ node of this session's own, which tests may stop and restart."""
    node = RabbitMQNode()
    try:
        node.start()
        yield node
    finally:
        node.remove()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster of this session's own, which tests may stop and restart."""
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def restartable_services(
    rabbitmq_node: RabbitMQNode, postgres_cluster: PostgresCluster
) -> Iterator[tuple[str, str]]:
    """(broker URL, database URL): a new vhost and database on the private servers.

    The test may stop and restart the servers; both run again after it.
    """
    yield rabbitmq_node.add_vhost(), postgres_cluster.add_database()
    if not rabbitmq_node.running:
        rabbitmq_node.start()
    if not postgres_cluster.running:
        postgres_cluster.start()


@pytest.fixture(scope="session")
def tls_rabbitmq_node() -> Iterator[TlsRabbitMQNode]:
    """A RabbitMQ node of this session's own that takes clients over TLS with certificates."""
    node = TlsRabbitMQNode()
    try:
        node.start()
        yield node
    finally:
        node.remove()
