"""Token login on a real RabbitMQ node with ``rabbitmq_auth_backend_oauth2``: the broker
service, a pilot and a submitter log in with JWT access tokens and run a job; expired,
wrongly signed and wrongly scoped tokens are refused, each with one clear line."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from kombu import Connection

from broker import topology
from broker.api import JobEnding
from broker.client import Client
from broker.errors import BrokerRefused, BrokerUnavailable
from broker.messaging.connection import broker_errors, connect
from broker.protocol import JobSpec
from broker.security import scopes, tokens
from broker.settings import Settings
from cli.main import pandamq
from tests.budget import TEARDOWN_S, capped
from tests.conftest import test_settings
from tests.harness import System, dead_letters, wait_for
from tests.nodes import RABBITMQ_START_S
from tests.tokens import TokenRabbitMQNode

#: A test's own waits: at most a job run to its end, watched from the CLI.
TEST_WAITS_S = 120.0

pytestmark = [
    pytest.mark.services,
    pytest.mark.timeout(RABBITMQ_START_S + TEST_WAITS_S + TEARDOWN_S),
]


@pytest.fixture(scope="module")
def token_node() -> Iterator[TokenRabbitMQNode]:
    """This module's RabbitMQ node, taking tokens signed by its own key."""
    node = TokenRabbitMQNode()
    try:
        node.start()
        yield node
    finally:
        node.remove()


@dataclass
class TokenVhost:
    """A vhost of the test's own on the token node, and where its tokens go."""

    node: TokenRabbitMQNode
    vhost: str
    base: Settings
    tokens_dir: Path

    def token_file(self, user: str, **claims: object) -> Path:
        """A file with a token for ``user`` in this vhost (``claims`` as ``node.token``'s)."""
        path = self.tokens_dir / f"{user}-{uuid.uuid4().hex[:6]}.token"
        vhost = str(claims.pop("vhost", self.vhost))
        path.write_text(self.node.token(user, vhost, **claims))  # type: ignore[arg-type]
        return path

    def as_(self, user: str, **claims: object) -> Settings:
        """Settings of a client logging in with a token for ``user``."""
        return self.node.settings_for(self.base, self.vhost, self.token_file(user, **claims))

    def env(self, token_file: Path) -> dict[str, str | None]:
        """The environment of a ``pandamq`` command logging in with ``token_file``."""
        return {
            "PANDAMQ_BROKER_URL": self.node.token_url(self.vhost),
            "PANDAMQ_BROKER_TOKEN_FILE": str(token_file),
            "PANDAMQ_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/x",
            "PANDAMQ_CONFIG": None,
        }


@dataclass
class Deployment(TokenVhost):
    """A token vhost with a broker service logged in by token, and one site."""

    system: System
    site: str


@pytest.fixture(scope="module")
def module_vhost(token_node: TokenRabbitMQNode) -> str:
    """The module's vhost on its node (each rabbitmqctl call costs seconds here)."""
    return token_node.add_vhost().rsplit("/", 1)[1]


@pytest.fixture
def token_vhost(token_node: TokenRabbitMQNode, module_vhost: str, tmp_path: Path) -> TokenVhost:
    """The module's vhost, with the test's own directories (and no database)."""
    tokens_dir = tmp_path / "tokens"
    tokens_dir.mkdir()
    no_database = f"sqlite:///{tmp_path / 'unused.sqlite'}"
    base = test_settings(token_node.url(module_vhost), no_database, tmp_path)
    return TokenVhost(token_node, module_vhost, base, tokens_dir)


@pytest.fixture
def deployment(token_vhost: TokenVhost, services: tuple[str, str]) -> Iterator[Deployment]:
    """A broker service of the test's own, on a database of its own, logged in as
    service.broker with a token."""
    v = token_vhost
    v.base = v.base.replace(database_url=services[1])
    service = v.node.settings_for(v.base, v.vhost, v.token_file("service.broker"))
    system = System(service)
    try:
        site = system.new_site()
        system.start_broker()
        yield Deployment(v.node, v.vhost, v.base, v.tokens_dir, system, site)
    finally:
        system.close()
    assert not dead_letters(v.base)


def test_a_pilot_and_a_submitter_logged_in_by_token_run_a_job(
    deployment: Deployment, tmp_path: Path
) -> None:
    # Given a pilot of the site logging in with a pilot.SITE token
    d = deployment
    d.system.start_pilot(d.site, settings=d.as_(f"pilot.{d.site}"))
    # When alice, with a user.alice token, submits a job from her client and watches it
    spec = JobSpec(command="echo by token", id=uuid.uuid4().hex, site=d.site)
    with Client(d.as_("user.alice")) as alice:
        (receipt,) = alice.submit([spec])
        assert receipt.accepted, receipt.reason
        endings = list(alice.watch([spec.id], timeout_s=capped(60)))
        # Then the pilot runs it to the end, and it is alice's
        assert [(e.job_id, e.state) for e in endings if isinstance(e, JobEnding)] == [
            (spec.id, "finished")
        ]
        assert alice.job(spec.id).job.owner == "user.alice"
    # And the pandamq command, with her token file and no database, submits and waits too
    job_file = tmp_path / "job.json"
    job_file.write_text(f'{{"command": "true", "site": "{d.site}"}}')
    env = d.env(d.token_file("user.alice"))
    submitted = CliRunner(env=env).invoke(pandamq, ["submit", str(job_file), "--wait"])
    assert submitted.exit_code == 0, submitted.output
    assert d.system.job(submitted.stdout.strip())["owner"] == "user.alice"


def _refused_cli_line(d: TokenVhost, token_file: Path) -> str:
    """What ``pandamq jobs`` prints when it logs in with ``token_file``; it must fail."""
    result = CliRunner(env=d.env(token_file)).invoke(pandamq, ["jobs"])
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr


@pytest.mark.parametrize(
    ("kind", "claims", "code", "why"),
    [
        ("expired", {"issued_at": time.time() - 7200}, 403, ": it expired at "),
        ("wrongly signed", {"key": tokens.new_key()}, 403, ": it is unexpired, so its signature"),
        ("for another vhost", {"vhost": "elsewhere"}, 530, ": it has no scope for vhost '"),
    ],
)
def test_a_bad_token_is_refused_at_login_with_one_line(
    token_vhost: TokenVhost, kind: str, claims: dict[str, object], code: int, why: str
) -> None:
    # Given a token of alice's that is expired, signed by another key, or for another vhost
    d = token_vhost
    token_file = d.token_file("user.alice", **claims)
    settings = d.node.settings_for(d.base, d.vhost, token_file)
    # When a client logs in with it, Then RabbitMQ refuses the login (or the vhost)
    with pytest.raises(BrokerRefused) as refused:
        connect(settings).release()
    assert getattr(refused.value.__cause__, "reply_code", None) == code, kind
    # And a pandamq command fails with one line naming the token and what failed
    line = _refused_cli_line(d, token_file)
    where = f"the message broker at {d.node.token_url(d.vhost)} refused the token in {token_file}"
    assert line.startswith(f"pandamq: error: {where} (user.alice){why}"), line
    assert "(`pandamq tokens issue`)" in line if kind == "expired" else True
    assert f"get a token for vhost '{d.vhost}'" in line if code == 530 else True


def test_a_token_is_refused_what_its_scopes_do_not_grant(deployment: Deployment) -> None:
    # Given a pilot token of the site, and bob's token
    d = deployment
    other_site = f"SITE_{uuid.uuid4().hex[:8].upper()}"
    queue = topology.Topology().pilot_job_queue(other_site, "SCORE")
    # When the pilot reads another site's job queue
    with (
        connect(d.as_(f"pilot.{d.site}")) as connection,
        pytest.raises(BrokerRefused) as refused,
        broker_errors(connection, "reading another site's queue"),
    ):
        queue.bind(connection.channel()).get()
    # Then RabbitMQ refuses the operation
    assert "ACCESS_REFUSED" in str(refused.value)
    # And bob may not follow alice's endings (a topic scope he does not have)
    with Client(d.as_("user.bob")) as bob, pytest.raises(BrokerRefused) as bound:
        bob.following(["user.alice.#"])
    assert f"access to topic 'user.alice.#' in exchange '{topology.ENDINGS_EXCHANGE}'" in str(
        bound.value
    )


def _declare_follow_queue(connection: Connection) -> None:
    """Declare a follow queue as alice does, server-named: configure permission on
    ``amq.gen-*``, checked at once."""
    with broker_errors(connection, "declaring a follow queue"):
        channel = connection.channel()
        declared = channel.queue_declare(topology.SERVER_NAMED, exclusive=True, auto_delete=True)
        assert declared.queue.startswith("amq.gen-")
        channel.close()


def test_a_renewed_token_file_is_used_at_the_next_connection(token_vhost: TokenVhost) -> None:
    # Given a connection logged in with a token of alice's that expires in 3 s
    d = token_vhost
    settings = d.as_("user.alice", minutes=3 / 60)
    connection = connect(settings)
    try:
        _declare_follow_queue(connection)
        # When her file is renewed, and the first token has expired
        Path(str(settings.broker_token_file)).write_text(d.node.token("user.alice", d.vhost))
        expired_at = time.time() + 4
        wait_for(lambda: time.time() > expired_at, capped(10), what="the first token to expire")
        # Then RabbitMQ refuses the old connection's operations, which is an outage to
        # reconnect from, not a refusal for good
        with pytest.raises(BrokerUnavailable, match="the token this connection logged in with"):
            _declare_follow_queue(connection)
    finally:
        connection.collect()
    # And the next connection logs in with the renewed token
    with connect(settings) as renewed:
        _declare_follow_queue(renewed)


def test_a_pilots_token_that_expires_while_it_runs_a_job_is_renewed_and_the_job_ends(
    deployment: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a pilot whose token expires in 4 s, and whose token file is renewed meanwhile
    caplog.set_level(logging.INFO, logger="broker.reconnect")
    d = deployment
    user = f"pilot.{d.site}"
    settings = d.as_(user, minutes=4 / 60)
    expires_at = time.time() + 4
    d.system.start_pilot(d.site, max_jobs=1, settings=settings)
    # (renewed as a token agent must: a new file renamed over the old, never half written)
    renewed = d.tokens_dir / "renewed.token"
    renewed.write_text(d.node.token(user, d.vhost))
    os.replace(renewed, str(settings.broker_token_file))
    # When it runs a job that lasts beyond the first token's expiry
    spec = JobSpec(command="sleep 15", id=uuid.uuid4().hex, site=d.site)
    with Client(d.as_("user.alice")) as alice:
        (receipt,) = alice.submit([spec])
    assert receipt.accepted, receipt.reason
    wait_for(lambda: d.system.states([spec.id]) == {spec.id: "running"}, what="the job running")
    # And, once the token has expired, its connection is cut (RabbitMQ may refuse the
    # expired connection's next publish, or let it through on permissions it checked
    # before: the cut makes the pilot log in again either way)
    wait_for(lambda: time.time() > expires_at + 1, capped(15), what="the first token to expire")
    _close_connections_of(d.node, user)
    # Then the job ends finished, in its first attempt, reported after the expiry on a new
    # connection logged in with the renewed token
    assert d.system.wait_final([spec.id], timeout_s=capped(60)) == {spec.id: "finished"}
    job = d.system.job(spec.id)
    assert job["attempt"] == 1
    reported = next(
        t for t in job["transitions"] if t["reason"].startswith("finished reported by pilot")
    )
    assert datetime.fromisoformat(reported["at"]).timestamp() > expires_at, reported
    logged = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("pilot ") and " back after " in m for m in logged), logged
    expired = [m for m in logged if "the token this connection" in m]
    assert all("the next connection reads broker_token_file" in m for m in expired)


def _close_connections_of(node: TokenRabbitMQNode, user: str) -> None:
    """Close every connection ``user`` has open on ``node``, as RabbitMQ might."""
    listed = node.ctl("list_connections", "user", "pid").stdout.splitlines()
    pids = [line.split("\t")[1] for line in listed if line.split("\t")[0] == user]
    assert pids, listed
    for pid in pids:
        node.ctl("close_connection", pid, "the test cuts the expired token's connection")


def test_a_token_too_long_for_rabbitmqs_login_frame_is_named_so(token_vhost: TokenVhost) -> None:
    # Given alice's token with some hundred scopes more than she needs (over 4 KB)
    d = token_vhost
    padding = [f"pandamq.read:{d.vhost}/pandamq.padding.{n:04d}" for n in range(100)]
    granted = scopes.scopes(scopes.for_user("user.alice"), d.vhost) + padding
    token_file = d.tokens_dir / "long.token"
    token_file.write_text(tokens.issue(d.node.key, tokens.DEFAULT_KID, "user.alice", granted))
    # When a pandamq command logs in with it, Then RabbitMQ drops the connection, and the
    # line says why
    line = _refused_cli_line(d, token_file)
    assert f"dropped the login with the token in {token_file}: the token has " in line
    assert "RabbitMQ takes a login of at most 4096 bytes; ask for a token with fewer" in line
