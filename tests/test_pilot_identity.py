"""A pilot's identity is its own, on a real TLS RabbitMQ node: pilot A1 of a site can
neither claim, report on, finish, fail nor acknowledge the kill of a job pilot A2 of
the same site holds, by naming A2 in what it sends. Each attempt is dead-lettered
with the reason and counted, and A2's job runs on to its end."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from broker import topology
from broker.client import Client
from broker.messaging.publisher import Outgoing
from broker.metrics import REFUSED_SENDERS
from broker.protocol import ClaimRequest, EventKind, JobEvent, JobSpec, encode
from broker.security import identity
from broker.settings import Settings
from tests.budget import TEARDOWN_S, capped
from tests.conftest import test_settings
from tests.harness import System, dead_letters, publish, wait_for
from tests.nodes import RABBITMQ_START_S
from tests.tls import PROVISIONING_S, TlsRabbitMQNode

#: The test's own waits: a job of a few seconds watched to its end.
TEST_WAITS_S = 90.0
TLS_TIMEOUT_S = RABBITMQ_START_S + PROVISIONING_S + TEST_WAITS_S + TEARDOWN_S

pytestmark = [pytest.mark.services, pytest.mark.timeout(TLS_TIMEOUT_S)]


@dataclass(frozen=True)
class Site:
    """A provisioned vhost on the TLS node: one site with two pilots of their own."""

    vhost: str
    site: str


@pytest.fixture(scope="module")
def two_pilots(tls_rabbitmq_node: TlsRabbitMQNode) -> Site:
    """Provisioned once for the module (some 20 rabbitmqctl commands)."""
    vhost = tls_rabbitmq_node.add_vhost().rsplit("/", 1)[1]
    site = f"SITE_{uuid.uuid4().hex[:8].upper()}"
    pilots = [(site, "A1"), (site, "A2")]
    tls_rabbitmq_node.provision(vhost, [], ["alice"], pilots=pilots)
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
    base = test_settings(node.url(vhost), services[1], tmp_path)
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
    # When pilot A1 of the same site claims it as A2 (answer to itself, or to A2), as
    # itself with the answer to A2, and reports a heartbeat, its end (finished, failed) and a kill's end (cancelled) as A2,
    # and reports it finished as itself
    forged = [uuid.uuid4().hex for _ in range(5)]
    kinds: list[EventKind] = ["heartbeat", "finished", "failed", "cancelled"]
    as_a2 = [JobEvent(e, spec.id, 1, "A2", k, 0.0) for e, k in zip(forged, kinds, strict=False)]
    as_a1 = JobEvent(forged[4], spec.id, 1, "A1", "finished", 0.0, exit_code=0)
    to_a1, to_a2 = (topology.pilot_address(d.site, p) for p in ("A1", "A2"))
    publish(
        d.as_(a1),
        *(
            Outgoing(
                topology.CLAIMS_EXCHANGE,
                topology.CLAIMS_QUEUE,
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
    reported = {t["reason"] for t in job["transitions"] if "reported by" in (t["reason"] or "")}
    assert reported == {f"{k} reported by pilot A2" for k in ("starting", "running", "finished")}

