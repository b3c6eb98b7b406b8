"""RabbitMQ permissions: a site's pilots reach only their site's queues and keys; a
submitter only the API's exchanges and their own follow queues and endings."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from broker import topology
from broker.client import follow
from broker.security import provisioning
from cli.main import pandamq


def matches(pattern: str, name: str) -> bool:
    return re.search(pattern, name) is not None


#: A private queue's name as RabbitMQ 3.10 gives it (``amq.gen-`` and 22 base64url
#: characters), and names a client might give one itself.
SERVER_NAMED = "amq.gen-GjVVxhx8N7HPcShRcDNPqQ"
NAMED_BY_CLIENT = [
    "pandamq.reply.SITE.A.node-1-abc.f00d",
    "pandamq.control.SITE.A.node-1-abc.f00d",
    "pandamq.follow.user.alice.f00d",
    "amq.gen",
    "xamq.gen-abc",
]


def test_a_sites_pilots_read_only_their_sites_queues_and_their_own_private_ones() -> None:
    p = provisioning.pilot_permissions("SITE.A")
    t = topology.Topology()
    own = [topology.job_queue_name("SITE.A", "MCORE_HIMEM"), SERVER_NAMED]
    others = [
        topology.job_queue_name("SITE_B", "SCORE"),
        topology.job_queue_name("SITExA", "SCORE"),
        *NAMED_BY_CLIENT,
        topology.SUBMIT_QUEUE,
        topology.CLAIMS_QUEUE,
        topology.EVENTS_QUEUE,
        topology.DEAD_LETTER_QUEUE,
        topology.JOBS_EXCHANGE,
    ]
    assert all(matches(p.read, n) for n in own)
    assert not any(matches(p.read, n) or matches(p.configure, n) for n in others)
    assert t.pilot_job_queue("SITE.A", "SCORE").exchange.name == ""
    # And they declare server-named queues only, no job queue, no exchange of the service
    assert matches(p.configure, SERVER_NAMED)
    shared = [topology.REPLIES_EXCHANGE, topology.CONTROL_EXCHANGE, own[0]]
    assert not any(matches(p.configure, n) for n in shared)
    for queue in (t.reply_queue("node-1-abc", "SITE.A"), t.control_queue("node-1-abc", "SITE.A")):
        assert queue.name == topology.SERVER_NAMED and queue.exclusive and queue.auto_delete
        assert queue.exchange.no_declare and queue.routing_key == "SITE.A.node-1-abc"


def test_no_role_but_the_service_configures_a_name_a_client_may_give() -> None:
    # Given every role's permissions, the site's shared pilots' and one pilot's own too
    whos = [
        provisioning.pilot("S"),
        provisioning.pilot("S", "A1"),
        provisioning.submitter("alice"),
        provisioning.submitter("prod", operator=True),
    ]
    for who in whos:
        p = provisioning.permissions(who)
        # Then it configures (declares, deletes) only names RabbitMQ gives: ``amq.gen-``
        # ones, which no client may give a queue or an exchange (RabbitMQ refuses the
        # ``amq.`` prefix), so it declares and deletes no exchange at all
        assert p.configure == r"^(?:amq\.gen\-(?:[^.]+))$", who
        # And writes (binds) and reads (consumes, purges) no queue a client named
        assert not any(matches(p.write, n) or matches(p.read, n) for n in NAMED_BY_CLIENT)


def test_a_pilot_with_its_own_identity_binds_its_private_queues_only_with_its_own_key() -> None:
    # Given pilot A1's permissions at site S
    p = provisioning.pilot_permissions("S", "A1")
    topics = {t[0]: t[1:] for t in provisioning.pilot_topic_permissions("S", "A1")}
    # Then it configures and reads server-named queues (another's is exclusive to its
    # connection: tests/test_least_privilege.py) and no queue named for a pilot
    assert matches(p.configure, SERVER_NAMED) and matches(p.read, SERVER_NAMED)
    for name in ("pandamq.reply.S.A1.f00d", "pandamq.control.S.A2.x"):
        assert not (matches(p.configure, name) or matches(p.read, name))
    # And binds them with its own key only
    for exchange in (topology.REPLIES_EXCHANGE, topology.CONTROL_EXCHANGE):
        write, read = topics[exchange]
        assert matches(read, "S.A1") and not matches(read, "S.A2") and write == "^$"
        assert not matches(read, "S.A1x") and not matches(read, "S.#")
    # And it still reads its site's job queues
    assert matches(p.read, topology.job_queue_name("S", "SCORE"))


def test_a_sites_pilots_publish_only_claims_events_and_dead_letters() -> None:
    p = provisioning.pilot_permissions("SITE_A")
    may = [topology.CLAIMS_EXCHANGE, topology.EVENTS_EXCHANGE, topology.DEAD_LETTER_EXCHANGE]
    may_not = [topology.SUBMIT_EXCHANGE, topology.COMMANDS_EXCHANGE, topology.JOBS_EXCHANGE]
    assert all(matches(p.write, n) for n in may)
    assert not any(matches(p.write, n) for n in may_not)
    keys = {t[0]: t[1:] for t in provisioning.pilot_topic_permissions("SITE_A")}
    write_events = keys[topology.EVENTS_EXCHANGE][0]
    assert matches(write_events, "SITE_A.running") and not matches(write_events, "SITE_B.running")


def test_submitters_publish_requests_to_the_api_exchanges_only() -> None:
    # Given alice's permissions
    p = provisioning.submitter_permissions("alice")
    api = [
        topology.SUBMIT_EXCHANGE,
        topology.TASKS_EXCHANGE,
        topology.COMMANDS_EXCHANGE,
        topology.QUERIES_EXCHANGE,
    ]
    # Then she may publish to the submitter's API exchanges, and nowhere a pilot or service does
    assert all(matches(p.write, n) for n in api)
    others = [
        topology.EVENTS_EXCHANGE,
        topology.CLAIMS_EXCHANGE,
        topology.JOBS_EXCHANGE,
        topology.ENDINGS_EXCHANGE,
        topology.DEAD_LETTER_EXCHANGE,
    ]
    assert not any(matches(p.write, n) for n in others)
    # And she declares none of the service's queues or exchanges, and reads none of them
    for name in [*api, *others, topology.job_queue_name("SITE_A", "SCORE")]:
        assert not matches(p.configure, name)
        assert not matches(p.read, name) or name == topology.ENDINGS_EXCHANGE
    # And she holds nothing on direct reply-to: it needs no permission (tests/test_security.py
    # shows her answers come on the real TLS node)
    assert not any(matches(r, topology.DIRECT_REPLY_TO) for r in p.args())


def test_submitters_declare_bind_and_read_only_server_named_queues() -> None:
    # Given alice's permissions
    p = provisioning.submitter_permissions("alice")
    # Then she may declare, bind (write) and consume (read) server-named queues, and
    # no queue she would name herself
    assert all(matches(r, SERVER_NAMED) for r in p.args())
    for name in NAMED_BY_CLIENT:
        assert not any(matches(r, name) for r in p.args())
    # And a follower's queue is one: server-named, exclusive, bound to the endings
    queue = topology.Topology().follow_queue(follow.owner_keys("user.alice"))
    assert queue.name == topology.SERVER_NAMED and queue.exclusive and queue.auto_delete
    assert [b.routing_key for b in queue.bindings] == ["user.alice.#"]
    # And she reads the endings exchange (to bind to it), which nobody else's queue needs
    assert matches(p.read, topology.ENDINGS_EXCHANGE)


def test_a_names_regex_characters_are_escaped() -> None:
    # Given a user whose name has characters that mean something in a regex
    ((_, _, read),) = provisioning.submitter_topic_permissions("a.b+c")
    # Then they are taken literally
    assert matches(read, "user.a.b+c.-.job") and not matches(read, "user.aXbbc.-.job")


def test_submitters_bind_only_to_their_own_endings_operators_to_everyones() -> None:
    # Given alice's topic permissions, and an operator's
    ((exchange, write, read),) = provisioning.submitter_topic_permissions("alice")
    ((op_exchange, op_write, op_read),) = provisioning.operator_topic_permissions("prod")
    own = [
        topology.job_ending_key("user.alice", None, "j1"),
        topology.job_ending_key("user.alice", "t1", "j1"),
        topology.task_ending_key("user.alice", "t1"),
        "user.alice.#",
        *follow.task_keys("user.alice", "t1"),
    ]
    others = [
        topology.job_ending_key("user.bob", None, "j1"),
        topology.job_ending_key("user.alicex", None, "j1"),
        topology.job_ending_key(None, None, "j1"),
        "#",
        "*.*.j1",
        "user.*.#",
        "user.alice",
    ]
    # Then alice binds only with keys that begin with her name, and publishes none
    assert exchange == op_exchange == topology.ENDINGS_EXCHANGE
    assert all(matches(read, k) for k in own) and not any(matches(read, k) for k in others)
    assert write == op_write == provisioning.NOTHING
    # And an operator binds with any key
    assert all(matches(op_read, k) for k in [*own, *others])


def test_the_plan_creates_vhost_users_without_passwords_and_permissions() -> None:
    commands = provisioning.plan("pandamq", ["SITE_A"], ["alice"], ["broker"], ["prod"])
    verbs = [(c[0], c[1] if c[0] != "set_permissions" else c[3]) for c in commands]
    assert verbs[0] == ("add_vhost", "pandamq")
    for user in ("service.broker", "user.alice", "user.prod", "pilot.SITE_A"):
        assert ("add_user", user) in verbs and ("clear_password", user) in verbs
        assert ("set_permissions", user) in verbs
    shown = provisioning.shell(commands, node="rabbit@host")
    assert shown.splitlines()[0] == "rabbitmqctl -n rabbit@host add_vhost pandamq"
    assert 'add_user pilot.SITE_A "$(openssl rand -base64 24)"' in shown


def test_the_plan_gives_submitters_and_operators_their_topic_permissions() -> None:
    # Given a plan with alice as a submitter, and prod as both submitter and operator
    commands = provisioning.plan("v", ["S"], ["alice", "prod"], ["broker"], ["prod"])
    # When its topic permissions on the endings exchange are read
    topics = [c for c in commands if c[0] == "set_topic_permissions"]
    endings = {c[3]: c[5:] for c in topics if c[4] == topology.ENDINGS_EXCHANGE}
    # Then alice's are her own, and prod, an operator once, reads every owner's
    assert endings == {
        "user.alice": [provisioning.NOTHING, r"^(?:user\.alice\.(?:.+))$"],
        "user.prod": [provisioning.NOTHING, "^(?:.*)$"],
    }
    assert [c[1] for c in commands if c[0] == "add_user"].count("user.prod") == 1


def test_apply_accepts_existing_users_and_reports_other_failures() -> None:
    ran: list[list[str]] = []

    def run(command: list[str]) -> tuple[int, str]:
        ran.append(command)
        return (70, "Error: user 'x' already exists") if command[0] == "add_user" else (0, "")

    commands = provisioning.plan("v", ["S"], [], ["broker"])
    assert provisioning.apply(commands, run) == len(commands) == len(ran)


def test_the_plan_as_definitions_holds_every_user_and_permission_without_a_password() -> None:
    # Given a plan with a site's shared pilots, one pilot of its own, a person and a service
    commands = provisioning.plan("v", ["S"], ["alice"], ["broker"], pilots=[("S", "A1")])
    # When it is turned into RabbitMQ definitions
    d = provisioning.definitions(commands)
    # Then each user is there once, with no password, and every grant of the plan
    names = ["service.broker", "user.alice", "pilot.S", "pilot.S:A1"]
    assert [u["name"] for u in d["users"]] == names  # type: ignore[attr-defined]
    assert {u["password_hash"] for u in d["users"]} == {""}  # type: ignore[attr-defined]
    assert d["vhosts"] == [{"name": "v"}]
    grants = {(p["user"], p["configure"], p["write"], p["read"]) for p in d["permissions"]}  # type: ignore[attr-defined]
    assert grants == {(c[3], *c[4:]) for c in commands if c[0] == "set_permissions"}
    topics = [(t["user"], t["exchange"], t["write"], t["read"]) for t in d["topic_permissions"]]  # type: ignore[attr-defined]
    assert topics == [tuple(c[3:]) for c in commands if c[0] == "set_topic_permissions"]


def test_provision_takes_pilots_of_their_own_and_prints_definitions() -> None:
    # Given pandamq rabbitmq provision with a pilot of its own and --definitions
    args = ["rabbitmq", "provision", "--vhost", "v", "--pilot", "SITE_A:wn1", "--definitions"]
    result = CliRunner(env={"PANDAMQ_CONFIG": None}).invoke(pandamq, args)
    # Then it prints the definitions of the pilot's user, and needs no catalogue
    assert result.exit_code == 0, result.output
    users = [u["name"] for u in json.loads(result.stdout)["users"]]
    assert users == ["service.broker", "pilot.SITE_A:wn1"]


@pytest.mark.parametrize("pilot", ["SITE_A", "SITE_A:", "SITE A:wn1", "SITE_A:wn 1"])
def test_a_pilot_without_a_valid_site_and_id_is_one_clear_error(pilot: str) -> None:
    args = ["rabbitmq", "provision", "--vhost", "v", "--pilot", pilot]
    result = CliRunner(env={"PANDAMQ_CONFIG": None}).invoke(pandamq, args)
    assert result.exit_code == 2
    assert result.stderr == f"pandamq: error: --pilot {pilot!r} must be SITE:PILOT_ID, each " + (
        "1-64 letters, digits, '_', '.' or '-'\n"
    )
