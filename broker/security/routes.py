"""The one registry of who sends what where: each message's exchange and routing
key, the queue it reaches, who may send it and who reads it.

RabbitMQ's permissions of every role (``broker.security.provisioning``) and
docs/operations.md "Who may do what" are derived from ``ROUTES``, so a new
message is either in this table, and so in everyone's permissions, or sent
by nobody (tests/broker/security/test_routes.py checks that every message of
the protocol has its route).

Names are patterns, as the protocol's ``QUEUE`` names them: ``<site>``,
``<pilot_id>`` and ``<owner>`` are the sender's or reader's own (a pilot's
site and pilot id, a person's user name); the other placeholders stand for
any value of their kind (``<rest>``: the task and job
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
    #: Each reader declares a queue of its own (server-named, exclusive, auto-delete) and
    #: binds it with its own keys: the sender routes by key, never by the queue's name.
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
        topology.SUBMIT_KEY,
        topology.SUBMIT_QUEUE,
        PEOPLE,
        SERVICE,
    ),
    Route(
        ("TaskSpec",),
        topology.TASKS_EXCHANGE,
        False,
        topology.TASKS_KEY,
        topology.TASKS_QUEUE,
        PEOPLE,
        SERVICE,
    ),
    Route(
        ("JobCommand",),
        topology.COMMANDS_EXCHANGE,
        False,
        topology.COMMANDS_KEY,
        topology.COMMANDS_QUEUE,
        PEOPLE,
        SERVICE,
    ),
    Route(
        ("Query",),
        topology.QUERIES_EXCHANGE,
        False,
        topology.QUERIES_KEY,
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
        "<owner>.<rest>",
        topology.PRIVATE_QUEUE,
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
        topology.CLAIMS_KEY,
        topology.CLAIMS_QUEUE,
        PILOTS,
        SERVICE,
    ),
    Route(
        ("ClaimReply",),
        topology.REPLIES_EXCHANGE,
        True,
        "<site>.<pilot_id>",
        topology.PRIVATE_QUEUE,
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
        "<site>.<pilot_id>",
        topology.PRIVATE_QUEUE,
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
        values = {"site": self.site, "pilot_id": self.pilot, "owner": self.user}
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


#: Placeholders that stand for one of a few words: a wildcard name lists each.
WORDS: dict[str, tuple[str, ...]] = {
    "resource_type": tuple(topology.RESOURCE_TYPES),
    "kind": get_args(EventKind),
}


def wildcards(name: str, who: Who) -> list[str]:
    """The names ``name`` stands for, for ``who``, in RabbitMQ's wildcard form (``*``:
    any text), as OAuth 2 scopes write them: a placeholder of a few words once per word."""
    bound = who.bound()
    names = [""]
    at = 0
    for m in _PLACEHOLDER.finditer(name):
        word = m.group(1)
        choices = (bound[word],) if word in bound else WORDS.get(word, ("*",))
        names = [n + name[at : m.start()] + c for n in names for c in choices]
        at = m.end()
    return [n + name[at:] for n in names]


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


ROLE_WORDS = {
    Role.SERVICE: "the broker service (`service.<name>`)",
    Role.SUBMITTER: "a submitter (`user.<name>`)",
    Role.OPERATOR: "an operator (`user.<name>`, production role)",
    Role.PILOT: "a pilot (`pilot.<site>:<pilot_id>`, or `pilot.<site>` shared)",
}


def _code(text: str) -> str:
    return f"`{text}`" if text else "(default)"


def _roles(roles: frozenset[Role]) -> str:
    return ", ".join(r.value for r in Role if r in roles)


def table() -> list[str]:
    """docs/operations.md's table of routes, one row each (checked by the doc test)."""
    lines = [
        "| message | exchange | routing key | queue | sent by | read by |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in ROUTES:
        messages = ", ".join(m if m == "dead letter" else f"`{m}`" for m in r.messages)
        queue = _code(r.queue) + (" (server-named, the reader's own)" if r.private else "")
        lines.append(
            f"| {messages} | {_code(r.exchange)} | {_code(r.key)} | {queue} "
            f"| {_roles(r.senders)} | {_roles(r.readers)} |"
        )
    return lines


def role_table() -> list[str]:
    """docs/operations.md's table of what each role may do, derived from the routes."""
    lines = [
        "| role | declares (exclusive, its own) | publishes to | binds its own to | reads |",
        "| --- | --- | --- | --- | --- |",
    ]
    for role in Role:
        if role is Role.SERVICE:
            lines.append(
                f"| {ROLE_WORDS[role]} | everything | everything | everything | everything |"
            )
            continue
        reading = read_by(role)
        own = [f"`{r.queue}`" for r in reading if r.private]
        sends = [f"`{r.exchange}` (`{r.key}`)" for r in sent_by(role) if not r.free]
        binds = [
            f"`{r.exchange}` (`{'any key' if role in r.reads_all else r.key}`)"
            for r in reading
            if r.private
        ]
        reads = [f"`{r.queue}`" for r in reading]
        cells = [", ".join(dict.fromkeys(c)) or "nothing" for c in (own, sends, binds, reads)]
        lines.append(f"| {ROLE_WORDS[role]} | " + " | ".join(cells) + " |")
    return lines
