"""The one registry of who sends what where: each message's exchange and routing
key, the queue it reaches, who may send it and who reads it.

RabbitMQ's permissions of every role (``broker.security.provisioning``) and
docs/operations.md "Who may do what" are derived from ``ROUTES``, so a new
message is either in this table, and so in everyone's permissions, or sent
by nobody (tests/broker/security/test_routes.py checks that every message of
the protocol has its route).

Names are patterns: ``<site>``, ``<pilot>`` and ``<user>`` are the sender's or
reader's own (a pilot's site and pilot id, a person's user name); the other
placeholders stand for any value of their kind (``<rest>``: the task and job
of an ending, ``<owner>.<task>.<job>`` or ``<owner>.<task>``, or ``#``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import get_args

from broker import topology
from broker.protocol import EventKind


class Role(StrEnum):
    """Who logs in: each role's RabbitMQ permissions come from the routes."""

    SERVICE = "service"
    SUBMITTER = "submitter"
    OPERATOR = "operator"
    PILOT = "pilot"


PEOPLE = frozenset({Role.SUBMITTER, Role.OPERATOR})
PILOTS = frozenset({Role.PILOT})
SERVICE = frozenset({Role.SERVICE})


@dataclass(frozen=True)
class Route:
    """One kind of message: where it is published, where it waits, who sends and reads it."""

    #: The protocol's class names of the messages (``broker.protocol``, ``broker.api``).
    messages: tuple[str, ...]
    exchange: str
    #: The exchange routes by key on a topic: RabbitMQ's topic permissions apply.
    topic: bool
    key: str
    queue: str
    senders: frozenset[Role]
    readers: frozenset[Role]
    #: Each reader declares, binds and deletes a queue of its own (exclusive, auto-delete).
    private: bool = False
    #: Readers that may bind their private queue with any key, not only their own.
    reads_all: frozenset[Role] = field(default_factory=frozenset)
    #: Publishing needs no permission (RabbitMQ's direct reply-to).
    free: bool = False


ROUTES: tuple[Route, ...] = (
    Route(
        ("JobSpec",),
        topology.SUBMIT_EXCHANGE,
        False,
        topology.SUBMIT_QUEUE,
        topology.SUBMIT_QUEUE,
        PEOPLE,
        SERVICE,
    ),
    Route(
        ("TaskSpec",),
        topology.TASKS_EXCHANGE,
        False,
        topology.TASKS_QUEUE,
        topology.TASKS_QUEUE,
        PEOPLE,
        SERVICE,
    ),
    Route(
        ("JobCommand",),
        topology.COMMANDS_EXCHANGE,
        False,
        topology.COMMANDS_QUEUE,
        topology.COMMANDS_QUEUE,
        PEOPLE,
        SERVICE,
    ),
    Route(
        ("Query",),
        topology.QUERIES_EXCHANGE,
        False,
        topology.QUERIES_QUEUE,
        topology.QUERIES_QUEUE,
        PEOPLE,
        SERVICE,
    ),
    Route(
        ("Answer",),
        "",
        False,
        topology.DIRECT_REPLY_TO,
        topology.DIRECT_REPLY_TO,
        SERVICE,
        PEOPLE,
        free=True,
    ),
    Route(
        ("JobEnding", "TaskEnding"),
        topology.ENDINGS_EXCHANGE,
        True,
        "<user>.<rest>",
        "pandamq.follow.<user>.<tag>",
        SERVICE,
        PEOPLE,
        private=True,
        reads_all=frozenset({Role.OPERATOR}),
    ),
    Route(
        ("JobDispatch",),
        topology.JOBS_EXCHANGE,
        False,
        "<site>.<resource_type>",
        "pandamq.jobs.<site>.<resource_type>",
        SERVICE,
        PILOTS,
    ),
    Route(
        ("ClaimRequest",),
        topology.CLAIMS_EXCHANGE,
        False,
        topology.CLAIMS_QUEUE,
        topology.CLAIMS_QUEUE,
        PILOTS,
        SERVICE,
    ),
    Route(
        ("ClaimReply",),
        topology.REPLIES_EXCHANGE,
        True,
        "<site>.<pilot>",
        "pandamq.reply.<site>.<pilot>.<tag>",
        SERVICE,
        PILOTS,
        private=True,
    ),
    Route(
        ("JobEvent",),
        topology.EVENTS_EXCHANGE,
        True,
        "<site>.<kind>",
        topology.EVENTS_QUEUE,
        PILOTS,
        SERVICE,
    ),
    Route(
        ("PilotCommand",),
        topology.CONTROL_EXCHANGE,
        True,
        "<site>.<pilot>",
        "pandamq.control.<site>.<pilot>.<tag>",
        SERVICE,
        PILOTS,
        private=True,
    ),
    Route(
        ("dead letter",),
        topology.DEAD_LETTER_EXCHANGE,
        False,
        "<queue>",
        topology.DEAD_LETTER_QUEUE,
        SERVICE | PILOTS,
        SERVICE,
    ),
)

#: What a placeholder not bound to the sender or reader may be.
ANY: dict[str, str] = {
    "resource_type": "|".join(topology.RESOURCE_TYPES),
    "kind": "|".join(get_args(EventKind)),
    "tag": r"[^.]+",
}
ANYTHING = ".+"
_PLACEHOLDER = re.compile(r"<(\w+)>")


@dataclass(frozen=True)
class Who:
    """A role, and what it is bound to: a pilot's site (and its own pilot id, if it has
    an identity of its own), a person's user name."""

    role: Role
    site: str | None = None
    pilot: str | None = None
    user: str | None = None

    def bound(self) -> dict[str, str]:
        """The placeholders this identity fixes."""
        values = {"site": self.site, "pilot": self.pilot, "user": self.user}
        return {k: v for k, v in values.items() if v is not None}


def pattern(name: str, who: Who) -> str:
    """The regular expression (unanchored) of the names ``name`` stands for, for ``who``."""
    bound = who.bound()
    parts: list[str] = []
    at = 0
    for m in _PLACEHOLDER.finditer(name):
        parts.append(re.escape(name[at : m.start()]))
        word = m.group(1)
        if word in bound:
            parts.append(re.escape(bound[word]))
        else:
            parts.append(f"(?:{ANY.get(word, ANYTHING)})")
        at = m.end()
    parts.append(re.escape(name[at:]))
    return "".join(parts)


def anchored(patterns: Iterable[str]) -> str:
    """One regex matching exactly the given patterns' names (nothing: ``^$``)."""
    unique = sorted(set(patterns))
    return "^(?:" + "|".join(unique) + ")$" if unique else "^$"


def sent_by(role: Role) -> list[Route]:
    """The routes ``role`` publishes on."""
    return [r for r in ROUTES if role in r.senders]


def read_by(role: Role) -> list[Route]:
    """The routes whose queues ``role`` reads."""
    return [r for r in ROUTES if role in r.readers]
