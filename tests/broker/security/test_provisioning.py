"""RabbitMQ permissions: a site's pilots reach only their site's queues and keys."""

from __future__ import annotations

import re

from broker import topology
from broker.security import provisioning


def matches(pattern: str, name: str) -> bool:
    return re.search(pattern, name) is not None


def test_a_sites_pilots_read_only_their_sites_queues_and_their_own_private_ones() -> None:
    p = provisioning.pilot_permissions("SITE.A")
    t = topology.Topology()
    own = [
        topology.job_queue_name("SITE.A", "MCORE_HIMEM"),
        topology.reply_queue_name("SITE.A", "node-1-abc", "f00d"),
        topology.control_queue_name("SITE.A", "node-1-abc", "f00d"),
    ]
    others = [
        topology.job_queue_name("SITE_B", "SCORE"),
        topology.job_queue_name("SITExA", "SCORE"),
        topology.reply_queue_name("SITE_B", "node-1-abc", "f00d"),
        topology.SUBMIT_QUEUE,
        topology.CLAIMS_QUEUE,
        topology.EVENTS_QUEUE,
        topology.DEAD_LETTER_QUEUE,
        topology.JOBS_EXCHANGE,
    ]
    assert all(matches(p.read, n) and matches(p.configure, n) for n in own)
    assert not any(matches(p.read, n) or matches(p.configure, n) for n in others)
    assert t.pilot_job_queue("SITE.A", "SCORE").exchange.name == ""


def test_a_sites_pilots_publish_only_claims_events_and_dead_letters() -> None:
    p = provisioning.pilot_permissions("SITE_A")
    may = [topology.CLAIMS_EXCHANGE, topology.EVENTS_EXCHANGE, topology.DEAD_LETTER_EXCHANGE]
    may_not = [topology.SUBMIT_EXCHANGE, topology.COMMANDS_EXCHANGE, topology.JOBS_EXCHANGE]
    assert all(matches(p.write, n) for n in may)
    assert not any(matches(p.write, n) for n in may_not)
    keys = {t[0]: t[1:] for t in provisioning.pilot_topic_permissions("SITE_A")}
    write_events = keys[topology.EVENTS_EXCHANGE][0]
    assert matches(write_events, "SITE_A.running") and not matches(write_events, "SITE_B.running")


def test_submitters_publish_submissions_and_commands_only() -> None:
    p = provisioning.submitter_permissions()
    assert matches(p.write, topology.SUBMIT_EXCHANGE) and matches(p.write, "pandamq.commands")
    assert not matches(p.write, topology.EVENTS_EXCHANGE)
    assert not matches(p.read, topology.job_queue_name("SITE_A", "SCORE"))


def test_the_plan_creates_vhost_users_without_passwords_and_permissions() -> None:
    commands = provisioning.plan("pandamq", ["SITE_A"], ["alice"], ["broker"])
    verbs = [(c[0], c[1] if c[0] != "set_permissions" else c[3]) for c in commands]
    assert verbs[0] == ("add_vhost", "pandamq")
    for user in ("service.broker", "user.alice", "pilot.SITE_A"):
        assert ("add_user", user) in verbs and ("clear_password", user) in verbs
        assert ("set_permissions", user) in verbs
    shown = provisioning.shell(commands, node="rabbit@host")
    assert shown.splitlines()[0] == "rabbitmqctl -n rabbit@host add_vhost pandamq"
    assert 'add_user pilot.SITE_A "$(openssl rand -base64 24)"' in shown


def test_apply_accepts_existing_users_and_reports_other_failures() -> None:
    ran: list[list[str]] = []

    def run(command: list[str]) -> tuple[int, str]:
        ran.append(command)
        return (70, "Error: user 'x' already exists") if command[0] == "add_user" else (0, "")

    commands = provisioning.plan("v", ["S"], [], ["broker"])
    assert provisioning.apply(commands, run) == len(commands) == len(ran)
