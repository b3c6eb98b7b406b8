"""The one registry of routes: every message the protocol has is in it, under the
queue the protocol names, and docs/operations.md shows the registry as it is."""

from __future__ import annotations

import re
from pathlib import Path

from broker import api, protocol, topology
from broker.security import provisioning, routes

OPERATIONS = Path(__file__).parents[3] / "docs" / "operations.md"


def _queued(module: object) -> dict[str, str]:
    """The message classes of a module that name their queue (``QUEUE``)."""
    return {
        name: value.QUEUE
        for name, value in vars(module).items()
        if isinstance(value, type) and isinstance(getattr(value, "QUEUE", None), str)
    }


def test_every_message_has_one_route_to_the_queue_it_names() -> None:
    # Given every message of the protocol and of the submitter's API that names a queue
    messages = _queued(protocol) | _queued(api)
    assert {c.__name__ for c in protocol.MESSAGES} <= set(messages)
    # Then each is in exactly one route, whose queue is the one it names
    routed = {m: r for r in routes.ROUTES for m in r.messages}
    assert sum(len(r.messages) for r in routes.ROUTES) == len(routed)
    assert {m: routed[m].queue for m in messages if m in routed} == messages
    # And the registry routes nothing else but dead letters
    assert set(routed) - set(messages) == {"dead letter"}


def test_every_exchange_has_its_routes_and_every_route_a_sender_and_a_reader() -> None:
    exchanges = {v for n, v in vars(topology).items() if n.endswith("_EXCHANGE")}
    assert {r.exchange for r in routes.ROUTES} - {""} == exchanges
    assert all(r.senders and r.readers for r in routes.ROUTES)


def test_a_pattern_fixes_the_identitys_own_names_and_escapes_them() -> None:
    who = routes.Who(routes.Role.PILOT, site="S.A", pilot="p+1")
    regex = routes.anchored([routes.pattern("pandamq.reply.<site>.<pilot_id>.<tag>", who)])
    assert regex == r"^(?:pandamq\.reply\.S\.A\.p\+1\.(?:[^.]+))$"
    assert routes.anchored([]) == "^$"


def _generated(section: str) -> list[str]:
    text = OPERATIONS.read_text()
    start = f"<!-- {section}: generated from broker/security/routes.py -->"
    body = text.split(start, 1)[1].split("<!-- end -->", 1)[0]
    return [line for line in body.strip().splitlines()]


def test_the_operations_page_shows_the_registry_and_each_roles_part() -> None:
    # Given docs/operations.md "Who may do what", Then its tables are the registry's
    assert _generated("routes") == routes.table(), "paste routes.table() into the page"
    assert _generated("roles") == routes.role_table(), "paste routes.role_table() into the page"


def _whos() -> list[routes.Who]:
    P = routes.Role.PILOT
    return [
        routes.Who(P, site="S", pilot="A1"),
        routes.Who(P, site="S"),
        routes.Who(routes.Role.SUBMITTER, user="user.alice"),
        routes.Who(routes.Role.OPERATOR, user="user.prod"),
    ]


def test_no_roles_permission_on_a_name_reaches_a_resource_of_another_kind() -> None:
    # Given every exchange and every queue of the service by name
    service_queues = [q.name for q in topology.Topology().service_queues()]
    assert not set(service_queues) & set(topology.EXCHANGES)
    for who in _whos():
        # When a role's permissions are derived from the routes
        p = provisioning.permissions(who)
        sends = {r.exchange for r in routes.sent_by(who.role) if not r.free}
        binds = {r.exchange for r in routes.read_by(who.role) if r.private}
        # Then it configures no exchange and no queue of the service
        for name in [*topology.EXCHANGES, *service_queues]:
            assert not re.match(p.configure, name), (who, name)
        # And writes and reads only the exchanges it publishes to and binds its own queues
        # to, and none of the service's queues, which it may so neither bind nor purge
        assert {x for x in topology.EXCHANGES if re.match(p.write, x)} == sends, who
        assert {x for x in topology.EXCHANGES if re.match(p.read, x)} == binds, who
        for name in service_queues:
            assert not re.match(p.write, name) and not re.match(p.read, name), (who, name)


def test_the_service_queues_of_old_names_were_their_exchanges_names() -> None:
    old = topology.OLD_QUEUE_NAMES
    assert set(old.values()) == {q.name for q in topology.Topology().service_queues()}
    assert set(old) - {"pandamq.dead"} <= set(topology.EXCHANGES)
