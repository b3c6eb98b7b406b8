"""Security on a real TLS RabbitMQ node: certificate login, per-site permissions,
the broker trusting RabbitMQ's validated ``user_id``, and job owners' roles: the
submitter's client works with the provisioned permissions only, and a user can
neither read, follow, kill nor retry another user's jobs."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from broker import topology
from broker.api import JobEnding, TaskEnding
from broker.client import Client
from broker.errors import BrokerRefused, BrokerUnavailable, NotAllowed
from broker.messaging.connection import broker_errors, connect
from broker.messaging.publisher import Outgoing
from broker.protocol import ClaimRequest, JobEvent, JobSpec, TaskSpec, encode
from broker.security import certs
from broker.settings import Settings
from broker.states import JobState
from cli.main import pandamq
from tests.budget import TEARDOWN_S, capped
from tests.conftest import test_settings
from tests.ddm_bridge.files import put_file
from tests.harness import System, dead_letters, publish, wait_for
from tests.nodes import RABBITMQ_START_S
from tests.tls import PROVISIONING_S, TlsRabbitMQNode

#: A test's own waits: at most a job, then a task, watched to their end.
TEST_WAITS_S = 150.0
#: The module's first test also starts the TLS node and provisions its vhost.
TLS_TIMEOUT_S = RABBITMQ_START_S + PROVISIONING_S + TEST_WAITS_S + TEARDOWN_S

pytestmark = [pytest.mark.services, pytest.mark.timeout(TLS_TIMEOUT_S)]


@dataclass
class Deployment:
    """A provisioned vhost on the TLS node, a running broker service, two sites."""

    node: TlsRabbitMQNode
    vhost: str
    system: System
    site_a: str
    site_b: str
    base: Settings
    certs_dir: Path
    #: Reasons of the dead letters taken from the vhost so far.
    dead_letters: list[str] = field(default_factory=list)

    def as_(self, common_name: str, **changes: object) -> Settings:
        """Settings of a client logging in with a certificate for ``common_name``."""
        issued = self.node.certificate(common_name, self.certs_dir)
        return self.node.settings_for(self.base, self.vhost, issued, **changes)

    def admin(self) -> Settings:
        """guest over plain TCP, to look into queues."""
        return self.base.replace(broker_url=self.node.url(self.vhost))

    def client(self, common_name: str, **changes: object) -> Client:
        """The submitter's client, logging in with a certificate for ``common_name``."""
        return Client(self.as_(common_name, **changes))

    def submit(self, who: str, site: str, command: str = "true") -> str:
        """A job submitted by ``who`` (a certificate's CN) to ``site``; its id."""
        spec = JobSpec(command=command, id=uuid.uuid4().hex, site=site)
        with self.client(who) as client:
            (receipt,) = client.submit([spec])
        assert receipt.accepted, receipt.reason
        return spec.id

    def task(self, who: str, site: str, files: int) -> str:
        """A task of ``files`` input files at ``site``, submitted by ``who``; its id."""
        dataset = f"in.{uuid.uuid4().hex[:8]}"
        for n in range(files):
            put_file(self.system.settings, self.system.engine, dataset, site, b"%d\n" % n)
        task = TaskSpec(
            command="cat {inputs} > {outputs}",
            input_dataset=dataset,
            output_dataset=f"out.{uuid.uuid4().hex[:8]}",
            id=f"t{uuid.uuid4().hex[:8]}",
            sites=[site],
        )
        with self.client(who) as client:
            receipt = client.submit_task(task)
        assert receipt.accepted, receipt.reason
        return task.id


@dataclass(frozen=True)
class Provisioned:
    """A vhost on the TLS node with two sites' pilots, two users, an operator and the
    broker service."""

    vhost: str
    site_a: str
    site_b: str


@pytest.fixture(scope="module")
def provisioned(tls_rabbitmq_node: TlsRabbitMQNode) -> Provisioned:
    """Provisioned once for the module: ``rabbitmqctl`` runs 28 commands, ~0.5 s each here."""
    vhost = tls_rabbitmq_node.add_vhost().rsplit("/", 1)[1]
    site_a, site_b = (f"SITE_{uuid.uuid4().hex[:8].upper()}" for _ in range(2))
    tls_rabbitmq_node.provision(vhost, [site_a, site_b], ["alice", "bob"], operators=["prod"])
    return Provisioned(vhost, site_a, site_b)


@pytest.fixture
def deployment(
    tls_rabbitmq_node: TlsRabbitMQNode,
    provisioned: Provisioned,
    services: tuple[str, str],
    tmp_path: Path,
) -> Iterator[Deployment]:
    """A broker service of the test's own on the provisioned vhost."""
    node, vhost = tls_rabbitmq_node, provisioned.vhost
    base = test_settings(node.url(vhost), services[1], tmp_path)
    certs_dir = tmp_path / "certs"
    broker_settings = node.settings_for(
        base,
        vhost,
        node.certificate("service.broker", certs_dir),
        production_role="user.prod",
    )
    system = System(broker_settings)
    try:
        for site in (provisioned.site_a, provisioned.site_b):
            system.add_site(site)
        system.start_broker()
        yield Deployment(
            node, vhost, system, provisioned.site_a, provisioned.site_b, base, certs_dir
        )
    finally:
        system.close()
    assert not dead_letters(base.replace(broker_url=node.url(vhost)))


def test_a_site_pilot_runs_its_sites_job_over_tls(deployment: Deployment) -> None:
    # Given a pilot of site A logging in with its certificate over amqps://
    d = deployment
    d.system.start_pilot(d.site_a, settings=d.as_(f"pilot.{d.site_a}"))
    # When alice submits a job to site A
    job_id = d.submit("user.alice", d.site_a)
    # Then the pilot runs it to the end, and the job is alice's
    assert d.system.wait_final([job_id]) == {job_id: "finished"}
    job = d.system.job(job_id)
    assert job["owner"] == "user.alice"


def test_a_pilot_cannot_read_another_sites_queue(deployment: Deployment) -> None:
    # Given site A's pilot certificate
    d = deployment
    pilot_a = d.as_(f"pilot.{d.site_a}")
    queue_b = topology.Topology().pilot_job_queue(d.site_b, "SCORE")
    # When it tries to declare and read site B's job queue
    with (
        connect(pilot_a) as connection,
        pytest.raises(BrokerRefused) as refused,
        broker_errors(connection, "reading site B's queue"),
    ):
        queue_b.bind(connection.channel()).get()
    # Then RabbitMQ refuses it
    assert "ACCESS_REFUSED" in str(refused.value)


def test_forged_claims_and_events_for_another_site_are_dead_lettered(
    deployment: Deployment,
) -> None:
    # Given a site-B job, activated, and site A's pilot certificate
    d = deployment
    job_id = d.submit("user.alice", d.site_b)
    pilot_a = d.as_(f"pilot.{d.site_a}")
    # When site A's pilot claims it, and reports it running (with its own site's key)
    claim = ClaimRequest(job_id, 1, "pilot-x", d.site_b, topology.pilot_address(d.site_a, "x"))
    event = JobEvent(uuid.uuid4().hex, job_id, 1, "pilot-x", "running", 0.0)
    publish(
        pilot_a,
        Outgoing(topology.CLAIMS_EXCHANGE, topology.CLAIMS_KEY, encode(claim)),
        Outgoing(topology.EVENTS_EXCHANGE, f"{d.site_a}.running", encode(event)),
    )
    # Then both are dead-lettered, saying why
    refused = wait_for(lambda: _reasons(d, 2), what="two dead letters")
    why = f"pilot.{d.site_a} may {{}} jobs of site {d.site_a} only; this job is at site {d.site_b}"
    assert sorted(refused) == sorted([why.format("claim"), why.format("report on")])
    # And the job is untouched
    assert d.system.states([job_id]) == {job_id: "activated"}
    assert [t["to_state"] for t in d.system.job(job_id)["transitions"]] == [
        "defined",
        "assigned",
        "activated",
    ]


def test_a_pilot_cannot_publish_events_with_another_sites_key(deployment: Deployment) -> None:
    # Given site A's pilot certificate
    d = deployment
    event = JobEvent(uuid.uuid4().hex, "some-job", 1, "pilot-x", "running", 0.0)
    # When it publishes an event routed as site B's
    with pytest.raises((BrokerRefused, BrokerUnavailable)) as refused:
        publish(
            d.as_(f"pilot.{d.site_a}"),
            Outgoing(topology.EVENTS_EXCHANGE, f"{d.site_b}.running", encode(event)),
        )
    # Then RabbitMQ refuses it (topic permissions)
    assert "ACCESS_REFUSED" in str(refused.value)


def test_alice_submits_jobs_and_a_task_and_watches_them_to_their_end(
    deployment: Deployment,
) -> None:
    # Given site A with a pilot and the DDM bridge, and alice's client with only her
    # provisioned permissions (answers by direct reply-to, endings on her follow queue)
    d = deployment
    d.system.start_bridge()
    d.system.start_pilot(d.site_a, settings=d.as_(f"pilot.{d.site_a}"))
    jobs = [d.submit("user.alice", d.site_a, "echo hello"), d.submit("user.alice", d.site_a)]
    task_id = d.task("user.alice", d.site_a, files=2)
    with d.client("user.alice") as alice:
        # When she watches her jobs, then her task
        job_endings = list(alice.watch(jobs, timeout_s=capped(60)))
        task_endings = list(alice.watch(task_id=task_id, timeout_s=capped(90)))
        # Then each job's ending came once, finished
        assert {e.job_id: e.state for e in job_endings if isinstance(e, JobEnding)} == {
            j: "finished" for j in jobs
        }
        # And the task ended done, after its jobs
        assert isinstance(task_endings[-1], TaskEnding) and task_endings[-1].status == "done"
        # And she reads her job, its log and her task back
        assert alice.job(jobs[0]).job.owner == "user.alice"
        assert "hello" in "".join(alice.job_log(jobs[0]).files.values())
        assert alice.task(task_id)["status"] == "done"


def test_a_user_cannot_read_another_users_jobs_or_tasks(deployment: Deployment) -> None:
    # Given alice's job and task, waiting at site B (no pilot there)
    d = deployment
    job_id = d.submit("user.alice", d.site_b)
    task_id = d.task("user.alice", d.site_b, files=1)
    rule = re.escape("user.bob does not own it (owned by user.alice) and has no production role")
    with d.client("user.bob") as bob:
        # When bob asks for her job, its log, her job list and her task
        # Then each is refused, naming the rule
        with pytest.raises(NotAllowed, match=f"^reading job {job_id} refused: {rule}$"):
            bob.job(job_id)
        with pytest.raises(NotAllowed, match=rule):
            bob.job_log(job_id)
        with pytest.raises(NotAllowed, match="production role"):
            bob.jobs(owner="user.alice")
        with pytest.raises(NotAllowed, match=f"^reading task {task_id} refused: {rule}$"):
            bob.task(task_id)
        # And watching her task is refused by the same rule
        with pytest.raises(NotAllowed, match=f"^reading task {task_id} refused: {rule}$"):
            list(bob.watch(task_id=task_id, timeout_s=capped(10)))
        # And his own job list and the states he may see hold nothing of hers
        assert job_id not in [j.id for j in bob.jobs().jobs]
        assert bob.states([job_id]) == {}


def test_a_user_cannot_kill_or_retry_another_users_job_a_production_role_can(
    deployment: Deployment,
) -> None:
    # Given alice's job, waiting at site B
    d = deployment
    job_id = d.submit("user.alice", d.site_b)
    rule = re.escape("user.bob does not own it (owned by user.alice) and has no production role")
    with d.client("user.bob") as bob:
        # When bob asks to kill it, or to retry it
        # Then each is refused, naming the rule, and the job waits on
        with pytest.raises(NotAllowed, match=f"^kill of job {job_id} refused: {rule}$"):
            bob.kill([job_id])
        with pytest.raises(NotAllowed, match=f"^retry of job {job_id} refused: {rule}$"):
            bob.retry([job_id])
    assert d.system.states([job_id]) == {job_id: "activated"}
    # When the production manager kills it
    with d.client("user.prod", production_role="user.prod") as prod:
        outcome = prod.kill([job_id], reason="test")
        # Then it is changed, and ends cancelled
        assert outcome.changed == [job_id]
        endings = list(prod.watch([job_id], timeout_s=capped(30)))
    assert [e.state for e in endings if isinstance(e, JobEnding)] == [JobState.CANCELLED.value]


def test_rabbitmq_refuses_a_user_binding_to_another_users_endings(
    deployment: Deployment,
) -> None:
    # Given bob's client
    d = deployment
    # When he follows alice's endings
    with d.client("user.bob") as bob, pytest.raises(BrokerRefused) as refused:
        bob.following(["user.alice.#"])
    # Then RabbitMQ itself refuses the binding (topic permission on the endings exchange)
    message = str(refused.value)
    assert "ACCESS_REFUSED" in message and "refused for user 'user.bob'" in message
    assert f"access to topic 'user.alice.#' in exchange '{topology.ENDINGS_EXCHANGE}'" in message


def test_a_pilots_certificate_cannot_use_the_submitters_api(deployment: Deployment) -> None:
    # Given site A's pilot certificate
    d = deployment
    # When its client lists jobs
    with d.client(f"pilot.{d.site_a}") as pilot, pytest.raises(BrokerRefused) as refused:
        pilot.jobs()
    # Then RabbitMQ refuses the request: pilots may not publish to the queries exchange
    assert "ACCESS_REFUSED" in str(refused.value)
    assert topology.QUERIES_EXCHANGE in str(refused.value)


def test_an_operator_reads_and_watches_another_users_jobs(deployment: Deployment) -> None:
    # Given alice's job at site A, which has a pilot
    d = deployment
    d.system.start_pilot(d.site_a, settings=d.as_(f"pilot.{d.site_a}"))
    job_id = d.submit("user.alice", d.site_a)
    # When the operator (production role in the service's settings and their own) reads
    # and watches it
    with d.client("user.prod", production_role="user.prod") as prod:
        endings = list(prod.watch([job_id], timeout_s=capped(60)))
        record = prod.job(job_id)
        listed = [j.id for j in prod.jobs(owner="user.alice").jobs]
        # And follows alice's endings directly
        prod.following(["user.alice.#"]).close()
    # Then the ending came, and the job and alice's list read back
    assert [(e.job_id, e.state) for e in endings if isinstance(e, JobEnding)] == [
        (job_id, "finished")
    ]
    assert record.job.owner == "user.alice" and job_id in listed


def test_certificates_of_another_ca_and_expired_ones_are_refused_at_the_handshake(
    deployment: Deployment, tmp_path: Path
) -> None:
    # Given a certificate from another CA, and an expired one from the node's CA
    d = deployment
    ca_key, ca_cert = certs.make_ca("someone else's CA")
    stranger = certs.write(tmp_path, "stranger", *certs.issue(ca_key, ca_cert, "pilot.X"))
    expired = d.node.certificate("pilot.Y", tmp_path / "old", days=1, age_days=10)
    why = {
        stranger: f"it refused tls_cert {stranger.cert}; check that a CA the broker trusts",
        expired: f"tls_cert {expired.cert} expired on ",
    }
    for issued, problem in why.items():
        # When a client connects with it
        with pytest.raises(BrokerRefused) as refused:
            connect(d.node.settings_for(d.base, d.vhost, issued)).release()
        # Then the server ends the TLS handshake, and one line says what is wrong
        message = str(refused.value)
        where = d.node.tls_url(d.vhost)
        assert message.startswith(f"the message broker at {where} ended the TLS handshake (")
        assert problem in message and "\n" not in message


def test_plain_amqp_to_the_tls_port_fails_clearly(deployment: Deployment) -> None:
    # Given the TLS port, addressed with amqp://
    d = deployment
    plain = d.base.replace(broker_url=f"amqp://127.0.0.1:{d.node.tls_port}/{d.vhost}")
    # When a client connects, Then it fails with a hint to use amqps://
    with pytest.raises(BrokerUnavailable) as failed:
        connect(plain, timeout_s=5).release()
    assert "use amqps://" in str(failed.value)


def _reasons(d: Deployment, count: int) -> list[str] | None:
    """The reasons of dead letters taken so far, once there are ``count`` of them."""
    d.dead_letters += [str(h[topology.REASON_HEADER]) for _, h in dead_letters(d.admin())]
    return d.dead_letters if len(d.dead_letters) >= count else None


def test_a_command_with_an_expired_certificate_fails_in_one_line(
    deployment: Deployment, tmp_path: Path
) -> None:
    # Given an expired certificate, and a job spec file
    d = deployment
    expired = d.node.certificate("user.alice", tmp_path / "old", days=1, age_days=10)
    spec = tmp_path / "job.json"
    spec.write_text(f'{{"command": "true", "site": "{d.site_a}"}}')
    env = {
        "PANDAMQ_BROKER_URL": d.node.tls_url(d.vhost),
        "PANDAMQ_DATABASE_URL": d.base.database_url,
        "PANDAMQ_TLS_CA": str(d.node.ca),
        "PANDAMQ_TLS_CERT": str(expired.cert),
        "PANDAMQ_TLS_KEY": str(expired.key),
        "PANDAMQ_CONFIG": None,
    }
    # When alice submits with it
    result = CliRunner(env=env).invoke(pandamq, ["submit", str(spec)])
    # Then the command fails with one line that says her certificate expired
    assert result.exit_code == 1
    assert result.stderr.startswith("pandamq: error: the message broker at amqps://")
    assert f"tls_cert {expired.cert} expired on " in result.stderr
    assert result.stderr.count("\n") == 1


def test_provision_applies_users_and_permissions_with_rabbitmqctl(
    tls_rabbitmq_node: TlsRabbitMQNode,
) -> None:
    # Given a TLS RabbitMQ node, When pandamq provisions a new vhost on it
    vhost = f"pandamq-{uuid.uuid4().hex[:8]}"
    args = ["--vhost", vhost, "--site", "SITE_P", "--user", "carol", "--operator", "dave"]
    args += ["--node"]
    result = CliRunner().invoke(
        pandamq, ["rabbitmq", "provision", *args, tls_rabbitmq_node.name, "--apply"]
    )
    assert result.exit_code == 0, result.output
    expected = f"vhost {vhost}: 1 site(s), 0 pilot(s), 1 submitter(s), 1 operator(s), 1 service(s)"
    assert result.stdout.startswith(expected)
    # Then the vhost has the four users with their permissions, and doing it again is fine
    listed = tls_rabbitmq_node.ctl("list_permissions", "-p", vhost).stdout
    assert {"service.broker", "user.carol", "user.dave", "pilot.SITE_P"} <= {
        line.split("\t")[0] for line in listed.splitlines()
    }
    # And carol's topic permission on the endings exchange is her own name, dave's anyone's
    topics = tls_rabbitmq_node.ctl("list_topic_permissions", "-p", vhost).stdout
    rows = {tuple(line.split("\t")) for line in topics.splitlines()}
    assert ("user.carol", topology.ENDINGS_EXCHANGE, "^$", r"^(?:user\.carol\.(?:.+))$") in rows
    assert ("user.dave", topology.ENDINGS_EXCHANGE, "^$", "^(?:.*)$") in rows
    again = CliRunner().invoke(
        pandamq, ["rabbitmq", "provision", *args, tls_rabbitmq_node.name, "--apply"]
    )
    assert again.exit_code == 0, again.output
    tls_rabbitmq_node.ctl("delete_vhost", vhost)


def test_the_submitter_commands_work_over_tls_with_no_database(
    deployment: Deployment, tmp_path: Path
) -> None:
    # Given alice's certificate, a pilot of site A, and no database URL that works
    d = deployment
    d.system.start_pilot(d.site_a, settings=d.as_(f"pilot.{d.site_a}"))
    alice = d.as_("user.alice")
    env = {
        "PANDAMQ_BROKER_URL": alice.broker_url,
        "PANDAMQ_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/x",
        "PANDAMQ_TLS_CA": str(alice.tls_ca),
        "PANDAMQ_TLS_CERT": str(alice.tls_cert),
        "PANDAMQ_TLS_KEY": str(alice.tls_key),
        "PANDAMQ_CONFIG": None,
    }
    spec = tmp_path / "job.json"
    spec.write_text(f'{{"command": "echo over tls", "site": "{d.site_a}"}}')
    # When she submits with --wait, then lists, shows and reads the log of her job
    submitted = CliRunner(env=env).invoke(pandamq, ["submit", str(spec), "--wait"])
    assert submitted.exit_code == 0, submitted.output
    job_id = submitted.stdout.strip()
    listed = CliRunner(env=env).invoke(pandamq, ["jobs", "--site", d.site_a, "--json"])
    shown = CliRunner(env=env).invoke(pandamq, ["job", job_id, "--log"])
    # Then each command answers over amqps://, as alice
    assert job_id in [j["id"] for j in json.loads(listed.stdout)]
    assert shown.exit_code == 0 and "over tls" in shown.stdout
