"""The one registry of routes: every message the protocol has is in it, under the
queue the protocol names, and docs/operations.md shows the registry as it is."""

from __future__ import annotations

from pathlib import Path

from broker import api, protocol, topology
from broker.security import routes

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
