"""Identity and least privilege on a real TLS RabbitMQ node.

A pilot's identity is its own: pilot A1 of a site can neither claim, report on,
finish, fail nor acknowledge the kill of a job pilot A2 of the same site holds, by
naming A2 in what it sends; each attempt is dead-lettered with the reason and
counted, and A2's job runs on to its end. And every role's credentials try every
operation on every queue and exchange: what the registry of routes allows works,
RabbitMQ refuses the rest."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from amqp import Message
from amqp.exceptions import AccessRefused, AMQPError, NotFound, ResourceLocked

from broker import topology
from broker.client import Client
from broker.messaging.connection import connect
from broker.messaging.publisher import Outgoing
from broker.metrics import REDISPATCHED, REFUSED_SENDERS
from broker.protocol import ClaimRequest, EventKind, JobEvent, JobSpec, encode
from broker.security import identity
from broker.settings import Settings
from tests.budget import TEARDOWN_S, capped
from tests.conftest import test_settings
from tests.harness import System, dead_letters, publish, queue_depth, wait_for
from tests.nodes import RABBITMQ_START_S
from tests.tls import PROVISIONING_S, TlsRabbitMQNode

#: The test's own waits: a job of a few seconds watched to its end.
TEST_WAITS_S = 90.0
TLS_TIMEOUT_S = RABBITMQ_START_S + PROVISIONING_S + TEST_WAITS_S + TEARDOWN_S

pytestmark = [pytest.mark.services, pytest.mark.timeout(TLS_TIMEOUT_S)]


@dataclass(frozen=True)
class Site:
    """A provisioned vhost on the TLS node: one site, two pilots of their own there."""

    vhost: str
    site: str


@pytest.fixture(scope="module")
def two_pilots(tls_rabbitmq_node: TlsRabbitMQNode) -> Site:
    """Provisioned once for the module (some 30 rabbitmqctl commands): the site's shared
    pilot identity, pilots A1 and A2 with their own, alice and the operator prod."""
    vhost = tls_rabbitmq_node.add_vhost().rsplit("/", 1)[1]
    site = f"SITE_{uuid.uuid4().hex[:8].upper()}"
    pilots = [(site, "A1"), (site, "A2")]
    tls_rabbitmq_node.provision(vhost, [site], ["alice"], operators=["prod"], pilots=pilots)
    return Site(vhost, site)


@dataclass
class Deployment:
    node: TlsRabbitMQNode
    vhost: str
    site: str
    system: System
    base: Settings
    certs_dir: Path

    def as_(self, common_name: str) -> Settings:
        issued = self.node.certificate(common_name, self.certs_dir)
        return self.node.settings_for(self.base, self.vhost, issued)

    def admin(self) -> Settings:
        return self.base.replace(broker_url=self.node.url(self.vhost))


@pytest.fixture
def deployment(
    tls_rabbitmq_node: TlsRabbitMQNode,
    two_pilots: Site,
    services: tuple[str, str],
    tmp_path: Path,
) -> Iterator[Deployment]:
    node, vhost = tls_rabbitmq_node, two_pilots.vhost
    # Dispatches a pilot purged are looked for every half second, after a second.
    base = test_settings(node.url(vhost), services[1], tmp_path).replace(
        watchdog_interval_s=0.5, redispatch_after_s=1.0
    )
    certs_dir = tmp_path / "certs"
    service = node.settings_for(base, vhost, node.certificate("service.broker", certs_dir))
    system = System(service)
    try:
        system.add_site(two_pilots.site)
        system.start_broker()
        yield Deployment(node, vhost, two_pilots.site, system, base, certs_dir)
    finally:
        system.close()
    assert not dead_letters(base.replace(broker_url=node.url(vhost)))


def _refused(kind: str) -> float:
    return REFUSED_SENDERS.labels(kind=kind)._value.get()  # type: ignore[no-any-return]


def test_a_pilot_cannot_claim_report_finish_fail_or_ack_the_kill_of_another_pilots_job(
    deployment: Deployment,
) -> None:
    # Given pilot A2, logging in with a certificate of its own, running alice's job
    d = deployment
    a1, a2 = identity.pilot_user(d.site, "A1"), identity.pilot_user(d.site, "A2")
    pilot_a2 = d.system.start_pilot(d.site, settings=d.as_(a2))
    assert pilot_a2.pilot_id == "A2"
    spec = JobSpec(command="sleep 4", id=uuid.uuid4().hex, site=d.site)
    with Client(d.as_("user.alice")) as alice:
        (receipt,) = alice.submit([spec])
    assert receipt.accepted, receipt.reason
    wait_for(lambda: d.system.states([spec.id]) == {spec.id: "running"}, what="A2 runs it")
    claims, events = _refused("claim"), _refused("event")
    # When pilot A1 of the same site claims it as A2 (answer to itself, or to A2), and
    # as itself with the answer to A2; reports a heartbeat, its end (finished, failed)
    # and a kill's end (cancelled) as A2; and reports it finished as itself
    forged = [uuid.uuid4().hex for _ in range(5)]
    kinds: list[EventKind] = ["heartbeat", "finished", "failed", "cancelled"]
    as_a2 = [JobEvent(e, spec.id, 1, "A2", k, 0.0) for e, k in zip(forged[:4], kinds, strict=True)]
    as_a1 = JobEvent(forged[4], spec.id, 1, "A1", "finished", 0.0, exit_code=0)
    to_a1, to_a2 = (topology.pilot_address(d.site, p) for p in ("A1", "A2"))
    publish(
        d.as_(a1),
        *(
            Outgoing(
                topology.CLAIMS_EXCHANGE,
                topology.CLAIMS_KEY,
                encode(ClaimRequest(spec.id, 1, pilot_id, d.site, reply_to)),
            )
            for pilot_id, reply_to in (("A2", to_a1), ("A2", to_a2), ("A1", to_a2))
        ),
        *(
            Outgoing(
                topology.EVENTS_EXCHANGE, topology.event_routing_key(d.site, e.kind), encode(e)
            )
            for e in [*as_a2, as_a1]
        ),
    )
    # Then each is dead-lettered, saying why, and counted
    taken: list[str] = []

    def reasons() -> list[str] | None:
        taken.extend(str(h[topology.REASON_HEADER]) for _, h in dead_letters(d.admin()))
        return taken if len(taken) >= 8 else None

    wait_for(reasons, timeout_s=capped(30), what="eight dead letters")
    assert sorted(taken) == sorted(
        [f"{a1} is pilot A1 and may not claim as pilot A2"] * 2
        + [f"{a1} may have claim answers sent to {to_a1} only, not {to_a2}"]
        + [f"{a1} is pilot A1 and may not report as pilot A2"] * 4
        + [f"pilot 'A1' did not claim job {spec.id!r}"]
    )
    assert (_refused("claim") - claims, _refused("event") - events) == (3, 5)
    # And A2's job ran on to its end, as A2 reported it, with none of A1's events
    assert d.system.wait_final([spec.id], timeout_s=capped(60)) == {spec.id: "finished"}
    job = d.system.job(spec.id)
    assert job["pilot_id"] == "A2" and job["attempt"] == 1
    # (the bridge adds "; outputs registered" to the end it moves on from holding)
    reasons_seen = [t["reason"] or "" for t in job["transitions"]]
    reported = {r.split(";")[0] for r in reasons_seen if "reported by" in r}
    assert reported == {f"{k} reported by pilot A2" for k in ("starting", "running", "finished")}


def test_a_pilot_that_purges_its_sites_queue_loses_no_job(deployment: Deployment) -> None:
    # Given alice's jobs waiting in the site's queue, no pilot running yet
    d = deployment
    a1 = identity.pilot_user(d.site, "A1")
    specs = [JobSpec(command="true", id=uuid.uuid4().hex, site=d.site) for _ in range(4)]
    ids = [s.id for s in specs]
    with Client(d.as_("user.alice")) as alice:
        assert all(r.accepted for r in alice.submit(specs))
    queue = topology.job_queue_name(d.site, "SCORE")
    wait_for(lambda: queue_depth(d.admin(), queue) == 4, what="four dispatches")
    before = _redispatched(d.site)
    # When pilot A1 purges the queue with its own certificate (RabbitMQ lets it)
    with connect(d.as_(a1)) as connection:
        assert connection.default_channel.queue_purge(queue) == 4
    # Then the broker service dispatches the four jobs again, and counts them
    wait_for(lambda: _redispatched(d.site) - before == 4, timeout_s=capped(30), what="redispatch")
    # (counted as they enter the outbox; the relay publishes them a moment later)
    wait_for(lambda: queue_depth(d.admin(), queue) == 4, what="the dispatches back")
    # And pilot A1 runs each to its end, each exactly once
    d.system.start_pilot(d.site, max_jobs=4, settings=d.as_(a1))
    assert d.system.wait_final(ids, timeout_s=capped(60)) == dict.fromkeys(ids, "finished")
    for job_id in ids:
        job = d.system.job(job_id)
        claimed = [t for t in job["transitions"] if t["to_state"] == "sent"]
        assert job["attempt"] == 1 and len(claimed) == 1, job["transitions"]


def _redispatched(site: str) -> float:
    return REDISPATCHED.labels(site=site)._value.get()  # type: ignore[no-any-return]


def test_a_message_moved_from_a_queue_of_an_old_name_keeps_its_sender(
    deployment: Deployment,
) -> None:
    # Given a claim pilot A1 forged as A2, left in the claims queue of its old name (only
    # it bound, as before an upgrade)
    d = deployment
    a1 = identity.pilot_user(d.site, "A1")
    claims = topology.Topology().claims_queue()
    old = "pandamq.claims"
    with connect(d.admin()) as connection:
        channel = connection.default_channel
        channel.queue_declare(old, durable=True, arguments=claims.queue_arguments)
        channel.queue_bind(old, T.CLAIMS_EXCHANGE, T.CLAIMS_KEY)
        channel.queue_unbind(claims.name, T.CLAIMS_EXCHANGE, T.CLAIMS_KEY)
        try:
            forged = ClaimRequest(uuid.uuid4().hex, 1, "A2", d.site, T.pilot_address(d.site, "A1"))
            publish(d.as_(a1), Outgoing(T.CLAIMS_EXCHANGE, T.CLAIMS_KEY, encode(forged)))
            assert queue_depth(d.admin(), old) == 1
        finally:
            channel.queue_bind(claims.name, T.CLAIMS_EXCHANGE, T.CLAIMS_KEY)
    # When a broker service starts and moves it to the claims queue
    d.system.start_broker()
    # Then it is refused as A1's, the sender RabbitMQ validated, not the service's
    taken: list[str] = []

    def refused() -> list[str] | None:
        taken.extend(str(h[topology.REASON_HEADER]) for _, h in dead_letters(d.admin()))
        return taken or None

    wait_for(refused, timeout_s=capped(30), what="the moved claim refused")
    assert taken == [f"{a1} is pilot A1 and may not claim as pilot A2"]
    with connect(d.admin()) as connection, pytest.raises(NotFound):
        connection.default_channel.queue_declare(old, passive=True)


# What each role may do, written out by hand from the registry's intent
# (broker/security/routes.py), and tried against RabbitMQ itself.

T = topology
SERVICE_QUEUES = [q.name for q in T.Topology().service_queues()]
#: The service's queues as earlier versions named them, each as its exchange: declared
#: here as an upgraded deployment may still have them until the service has moved them.
OLD_QUEUES = sorted(T.OLD_QUEUE_NAMES)
EXCHANGES = list(T.EXCHANGES)
#: Exchanges nobody made: declaring one is refused to every role but the service, an
#: ``amq.gen-`` one (a name the roles may configure) to everyone.
NEW_EXCHANGES = ["pandamq.mine", "pandamq.service.mine", "anything", "amq.gen-x"]
PEOPLES_REQUESTS = [
    (T.SUBMIT_EXCHANGE, T.SUBMIT_KEY),
    (T.TASKS_EXCHANGE, T.TASKS_KEY),
    (T.COMMANDS_EXCHANGE, T.COMMANDS_KEY),
    (T.QUERIES_EXCHANGE, T.QUERIES_KEY),
]


@dataclass(frozen=True)
class Role:
    """One role's identity and what it may do; anything else RabbitMQ must refuse."""

    name: str
    common_name: str
    #: (exchange, key) it binds its private queue with, as its clients do.
    holds: tuple[str, str]
    #: Other queues it consumes (and so, RabbitMQ's rule, may purge).
    reads: list[str]
    publishes: set[tuple[str, str]]
    #: (exchange, key) it may bind its own queues with.
    binds: set[tuple[str, str]]
    #: Queues of old names, each named as an exchange it publishes to or binds to:
    #: RabbitMQ's permissions do not tell the two apart, so it may bind them. Today's
    #: names leave it none of the service's queues.
    old_names: list[str]


def _roles(site: str) -> list[Role]:
    pilots_send = {
        (T.CLAIMS_EXCHANGE, T.CLAIMS_KEY),
        (T.EVENTS_EXCHANGE, T.event_routing_key(site, "running")),
        (T.DEAD_LETTER_EXCHANGE, "x"),
    }
    job_queue = T.job_queue_name(site, "SCORE")
    same = ["pandamq.claims", "pandamq.events"]
    a1, a2, p9 = (T.pilot_address(site, p) for p in ("A1", "A2", "P9"))
    anyones = {(x, k) for x in (T.REPLIES_EXCHANGE, T.CONTROL_EXCHANGE) for k in (a1, a2, p9)}
    people = set(PEOPLES_REQUESTS)
    alice_all = (T.ENDINGS_EXCHANGE, "user.alice.#")
    prod_all = (T.ENDINGS_EXCHANGE, "user.prod.#")
    return [
        Role(
            "pilot A1",
            identity.pilot_user(site, "A1"),
            (T.REPLIES_EXCHANGE, a1),
            [job_queue],
            pilots_send,
            {(T.REPLIES_EXCHANGE, a1), (T.CONTROL_EXCHANGE, a1)},
            same,
        ),
        Role(
            "pilot A2",
            identity.pilot_user(site, "A2"),
            (T.CONTROL_EXCHANGE, a2),
            [job_queue],
            pilots_send,
            {(T.REPLIES_EXCHANGE, a2), (T.CONTROL_EXCHANGE, a2)},
            same,
        ),
        # A site's shared identity may bind to every pilot's keys of its site.
        Role(
            "pilot of the site",
            identity.pilot_user(site),
            (T.REPLIES_EXCHANGE, p9),
            [job_queue],
            pilots_send,
            anyones,
            same,
        ),
        Role(
            "submitter",
            "user.alice",
            alice_all,
            [],
            people,
            {alice_all},
            [x for x, _ in PEOPLES_REQUESTS],
        ),
        Role(
            "operator",
            "user.prod",
            prod_all,
            [],
            people,
            {alice_all, (T.ENDINGS_EXCHANGE, "user.bob.#"), (T.ENDINGS_EXCHANGE, "#"), prod_all},
            [x for x, _ in PEOPLES_REQUESTS],
        ),
    ]


def _candidates(site: str, other: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Every queue a client may name and every (exchange, routing key) the test tries
    with each role; private queues are tried apart (``_outcomes``)."""
    queues = [*SERVICE_QUEUES, *OLD_QUEUES]
    queues += [T.job_queue_name(site, "SCORE"), T.job_queue_name(other, "SCORE")]
    queues += [T.job_queue_name(site, "NEW"), "anything"]
    # Private queues as earlier versions named them, a pilot's of this site and another's
    queues += [f"pandamq.{kind}.{site}.A1.t" for kind in ("reply", "control")]
    queues += [f"pandamq.reply.{other}.x.t"]
    queues += [f"pandamq.follow.{user}.t" for user in ("user.alice", "user.bob")]
    keys = [*PEOPLES_REQUESTS, (T.CLAIMS_EXCHANGE, T.CLAIMS_KEY), (T.DEAD_LETTER_EXCHANGE, "x")]
    keys += [(T.EVENTS_EXCHANGE, T.event_routing_key(s, "running")) for s in (site, other)]
    keys += [(T.JOBS_EXCHANGE, T.job_routing_key(site, "SCORE"))]
    for exchange in (T.REPLIES_EXCHANGE, T.CONTROL_EXCHANGE):
        keys += [(exchange, T.pilot_address(site, p)) for p in ("A1", "A2", "P9")]
        keys += [(exchange, T.pilot_address(other, "x"))]
    keys += [(T.ENDINGS_EXCHANGE, k) for k in ("user.alice.#", "user.bob.#", "user.prod.#", "#")]
    return queues, keys


def _try(connection: Any, op: Callable[[Any], object]) -> str:
    """``ok``, ``refused`` (ACCESS_REFUSED: a permission, a reserved name), ``locked``
    (RESOURCE_LOCKED: another connection's exclusive queue) or the error, of one
    operation on a channel of its own; a passive declare after it brings back a
    refused publish."""
    channel = connection.channel()
    try:
        op(channel)
        channel.exchange_declare("amq.direct", "direct", passive=True)
    except AccessRefused:
        return "refused"
    except ResourceLocked:
        return "locked"
    except AMQPError as exc:
        return f"error: {exc}"
    finally:
        if channel.is_open:
            channel.close()
    return "ok"


def _private(connection: Any, exchange: str, key: str) -> str:
    """Declare a private queue as pandamq's clients do, bound with ``key``: its name."""
    channel = connection.channel()
    queue = channel.queue_declare(T.SERVER_NAMED, exclusive=True, auto_delete=True).queue
    channel.queue_bind(queue, exchange, key)
    assert queue.startswith("amq.gen-"), queue
    return str(queue)


def _outcomes(
    connection: Any,
    role: Role,
    queues: list[str],
    keys: list[tuple[str, str]],
    held: dict[str, tuple[str, str]],
) -> dict[str, tuple[str, str]]:
    """What RabbitMQ answered to each operation with ``role``'s credentials, and what it
    should have: {operation: (outcome, expected)}. ``held``: private queues other
    connections hold (one of this role's own identity too), with their binding."""
    readable = set(role.reads)
    tried: dict[str, tuple[str, str]] = {}

    def expect(what: str, op: Callable[[Any], object], allowed: bool | str) -> None:
        expected = allowed if isinstance(allowed, str) else "ok" if allowed else "refused"
        tried[what] = (_try(connection, op), expected)

    # Its own private queue: declared with no name, RabbitMQ names it
    own = _private(connection, *role.holds)
    for q in queues:
        expect(
            f"declare queue {q}",
            lambda ch, q=q: ch.queue_declare(q, exclusive=True, auto_delete=True),
            False,
        )
    # Its own queue with every key; every other queue with the keys it may use.
    binds = [(own, x, k) for x, k in keys]
    binds += [(q, x, k) for q in queues for x, k in sorted(role.binds)]
    for q, x, k in binds:
        expect(
            f"bind {q} to {x} with {k}",
            lambda ch, q=q, x=x, k=k: ch.queue_bind(q, x, k),
            q in {own, *role.old_names} and (x, k) in role.binds,
        )
    for x, k in keys:
        expect(
            f"publish to {x} with {k}",
            lambda ch, x=x, k=k: ch.basic_publish(Message(b"{}"), x, k),
            (x, k) in role.publishes,
        )
    for q in [own, *queues]:
        expect(f"consume {q}", lambda ch, q=q: ch.basic_get(q, no_ack=True), q in {own, *readable})
        expect(f"purge {q}", lambda ch, q=q: ch.queue_purge(q), q in {own, *readable})
    # No exchange at all: the service's, new ones, one named as its own queue, ``amq.gen-``
    for x in [*EXCHANGES, *NEW_EXCHANGES, own]:
        expect(f"declare exchange {x}", lambda ch, x=x: ch.exchange_declare(x, "topic"), False)
        expect(f"delete exchange {x}", lambda ch, x=x: ch.exchange_delete(x), False)
    # Nobody else's private queue, by any means. Its name is reserved; and where the
    # permissions allow (every role's reach ``amq.gen-`` queues), RabbitMQ refuses
    # because it is exclusive to the connection holding it
    for q, (x, k) in held.items():
        expect(f"declare held {q}", lambda ch, q=q: ch.queue_declare(q, exclusive=True), False)
        for bx, bk in sorted(role.binds):
            expect(
                f"bind held {q} to {bx} with {bk}",
                lambda ch, q=q, x=bx, k=bk: ch.queue_bind(q, x, k),
                "locked",
            )
        expect(
            f"unbind held {q}",
            lambda ch, q=q, x=x, k=k: ch.queue_unbind(q, x, k),
            "locked" if (x, k) in role.binds else False,
        )
        expect(f"consume held {q}", lambda ch, q=q: ch.basic_get(q, no_ack=True), "locked")
        expect(f"purge held {q}", lambda ch, q=q: ch.queue_purge(q), "locked")
        expect(f"delete held {q}", lambda ch, q=q: ch.queue_delete(q), "locked")
    for q in queues:
        expect(f"delete queue {q}", lambda ch, q=q: ch.queue_delete(q), False)
    expect(f"delete queue {own}", lambda ch: ch.queue_delete(own), True)
    return tried


def test_every_role_may_do_what_the_registry_says_and_rabbitmq_refuses_the_rest(
    tls_rabbitmq_node: TlsRabbitMQNode, two_pilots: Site, tmp_path: Path
) -> None:
    # Given the deployment's topology, declared as the broker service does, with another
    # site's job queues too
    node, site, other = tls_rabbitmq_node, two_pilots.site, f"OTHER_{uuid.uuid4().hex[:6]}"
    base = Settings()
    admin = base.replace(broker_url=node.url(two_pilots.vhost))
    shape = topology.Topology(base.queue_type)
    exchanges = [shape.jobs_exchange(), shape.control_exchange(), shape.replies_exchange()]
    with connect(admin) as connection:
        topology.declare(
            connection.default_channel,
            [*shape.service_queues(), *shape.site_queues([site, other])],
            [*exchanges, shape.endings_exchange()],
        )
        for old in OLD_QUEUES:
            connection.default_channel.queue_declare(old, durable=True)
    roles = _roles(site)
    queues, keys = _candidates(site, other)
    wrong: dict[str, dict[str, tuple[str, str]]] = {}

    def settings(role: Role) -> Settings:
        issued = node.certificate(role.common_name, tmp_path)
        return node.settings_for(base, two_pilots.vhost, issued)

    # And every role holding a private queue, on a connection of its own, as its clients do
    with ExitStack() as holders:
        held: dict[str, tuple[str, str]] = {}
        for role in roles:
            holder = holders.enter_context(connect(settings(role)))
            held[_private(holder, *role.holds)] = role.holds
        try:
            for role in roles:
                # When each role tries every operation with its own certificate
                with connect(settings(role)) as connection:
                    tried = _outcomes(connection, role, queues, keys, held)
                wrong[role.name] = {what: got for what, got in tried.items() if got[0] != got[1]}
                allowed = sum(1 for got in tried.values() if got[1] == "ok")
                assert allowed > 5 and len(tried) - allowed > 80, (role.name, allowed, len(tried))
        finally:
            _clean(admin)
    # Then what it may do worked, and RabbitMQ refused everything else (ACCESS_REFUSED, or
    # RESOURCE_LOCKED on another connection's private queue)
    assert wrong == {role.name: {} for role in roles}


def _clean(admin: Settings) -> None:
    """Empty the service's queues, and delete the queues of old names."""
    with connect(admin) as connection:
        channel = connection.channel()
        for q in SERVICE_QUEUES:
            channel.queue_purge(q)
        for q in OLD_QUEUES:
            channel.queue_delete(q)
        channel.close()
