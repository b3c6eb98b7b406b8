"""A role's token scopes grant exactly what its provisioned RabbitMQ permissions grant,
on every name of the topology and every routing key the roles use or might forge."""

from __future__ import annotations

import re
from urllib.parse import unquote

import pytest

from broker import topology
from broker.security import identity, provisioning, scopes

SITE, OTHER_SITE = "SITE_A", "SITE_B"
VHOST = "pandamq/prod"

NAMES = [
    *(
        getattr(topology, n)
        for n in dir(topology)
        if n.endswith(("_EXCHANGE", "_QUEUE")) and isinstance(getattr(topology, n), str)
    ),
    *(topology.job_queue_name(s, r) for s in (SITE, OTHER_SITE) for r in topology.RESOURCE_TYPES),
    # a private queue as RabbitMQ names it, and as a client might name one itself
    "amq.gen-GjVVxhx8N7HPcShRcDNPqQ",
    *(f"pandamq.reply.{s}.node-1.f00d" for s in (SITE, OTHER_SITE)),
    *(f"pandamq.follow.{u}.f00d" for u in ("user.alice", "user.bob")),
    "amq.gen",
    "amq.default",
]
KEYS = [
    topology.event_routing_key(SITE, "running"),
    topology.event_routing_key(OTHER_SITE, "running"),
    topology.pilot_address(SITE, "node-1"),
    topology.pilot_address(OTHER_SITE, "node-1"),
    topology.job_ending_key("user.alice", None, "j1"),
    topology.job_ending_key("user.bob", "t1", "j1"),
    "user.alice.#",
    "#",
]
TOPIC_EXCHANGES = [
    topology.EVENTS_EXCHANGE,
    topology.REPLIES_EXCHANGE,
    topology.CONTROL_EXCHANGE,
    topology.ENDINGS_EXCHANGE,
]


def wildcard(subject: str, pattern: str) -> bool:
    """RabbitMQ's ``wildcard:match`` (oauth2 plugin, 3.10): ``*`` splits the pattern into
    parts found left to right, each at its first place, without backtracking."""
    first, *rest = [unquote(p) for p in pattern.split("*")]
    if not subject.startswith(first):
        return False
    pos = len(first)
    for n, part in enumerate(rest):
        if part == "" and n == len(rest) - 1:
            return True
        found = subject.find(part, pos)
        if found < 0:
            return False
        pos = found + len(part)
    return pos == len(subject)


def token_allows(granted: list[str], permission: str, name: str, key: str | None) -> bool:
    """Whether a token with scopes ``granted`` may do ``permission`` on ``name`` (with a
    routing ``key``: on a topic exchange, which also takes a topic scope)."""
    parsed = [s.removeprefix(f"{scopes.RESOURCE_SERVER_ID}.").split(":", 1) for s in granted]
    parts = [(p, where.split("/")) for p, where in parsed]

    def has(want: str, *subjects: str) -> bool:
        return any(
            p == want
            and len(w) == len(subjects) + 1
            and wildcard(VHOST, w[0])
            and all(wildcard(s, pattern) for s, pattern in zip(subjects, w[1:], strict=True))
            for p, w in parts
        )

    return has(permission, name) and (key is None or has(permission, name, key))


def provisioned_allows(user: str, permission: str, name: str, key: str | None) -> bool:
    """Whether the provisioned internal user may do the same."""
    commands = provisioning.plan(VHOST, [SITE], ["alice"], ["broker"], ["prod"])
    (grant,) = [c for c in commands if c[0] == "set_permissions" and c[3] == user]
    pattern = dict(zip(("configure", "write", "read"), grant[4:], strict=True))[permission]
    if re.search(pattern, name) is None:
        return False
    topics = [c[4:] for c in commands if c[0] == "set_topic_permissions" and c[3] == user]
    rows = [(w, r) for x, w, r in topics if x == name]
    if key is None or not rows:
        return True  # RabbitMQ's internal users: no topic permission, any key
    return all(re.search(w if permission == "write" else r, key) for w, r in rows)


ROLES = [
    (identity.pilot_user(SITE), False),
    (identity.submitter_user("alice"), False),
    (identity.submitter_user("prod"), True),
    (identity.service_user("broker"), False),
]


@pytest.mark.parametrize(("user", "operator"), ROLES)
def test_a_roles_scopes_grant_what_its_provisioned_permissions_grant(
    user: str, operator: bool
) -> None:
    # Given the role's token scopes, and its provisioned permissions
    granted = scopes.scopes(scopes.for_user(user, operator), VHOST)
    # Then for every name, permission and (on topic exchanges) routing key they agree
    differ = [
        (permission, name, key)
        for permission in ("configure", "write", "read")
        for name in NAMES
        # topic permissions are write and read only
        for key in (KEYS if name in TOPIC_EXCHANGES and permission != "configure" else [None])
        if token_allows(granted, permission, name, key)
        != provisioned_allows(user, permission, name, key)
    ]
    assert not differ


def test_scopes_name_the_vhost_percent_encoded_with_the_resource_server_prefix() -> None:
    # Given a pilot's scopes for a vhost with a slash, under another resource server id
    granted = scopes.scopes(scopes.pilot_grants(SITE), "grid/prod", "rabbit-1")
    # Then each is prefixed with the id and names the vhost encoded
    assert f"rabbit-1.read:grid%2Fprod/{topology.job_queue_name(SITE, 'SCORE')}" in granted
    assert f"rabbit-1.write:grid%2Fprod/{topology.EVENTS_EXCHANGE}/{SITE}.finished" in granted
    assert all(s.startswith("rabbit-1.") for s in granted)


def test_the_wildcard_matcher_finds_each_part_at_its_first_place_as_rabbitmq_does() -> None:
    assert wildcard("pandamq.jobs.SITE_A.SCORE", "pandamq.jobs.SITE_A.*")
    assert not wildcard("pandamq.jobs.SITE_AB.SCORE", "pandamq.jobs.SITE_A.*")
    assert wildcard("a.b", "a*b") and not wildcard("axbxb", "a*b")
    assert wildcard("grid/prod", "grid%2Fprod")


def test_a_pilot_of_its_own_is_granted_server_named_queues_and_only_its_own_keys() -> None:
    # Given the scopes of pilot wn1 of the site, from its own identity
    granted = scopes.scopes(scopes.for_user(identity.pilot_user(SITE, "wn1")), VHOST)
    # Then it declares and reads server-named queues, and no queue named for a pilot
    for permission in ("configure", "read"):
        assert token_allows(granted, permission, "amq.gen-GjVVxhx8N7HPcShRcDNPqQ", None)
        assert not token_allows(granted, permission, f"pandamq.reply.{SITE}.wn1.1", None)
    # And binds them to its replies with its own key, not another pilot's of the site
    replies = topology.REPLIES_EXCHANGE
    assert token_allows(granted, "read", replies, topology.pilot_address(SITE, "wn1"))
    assert not token_allows(granted, "read", replies, topology.pilot_address(SITE, "wn2"))
