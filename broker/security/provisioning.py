"""RabbitMQ for a deployment: the vhost, a user per service, per site's pilots
and per submitter, and the permissions that keep each to its own part.

A site's pilots (user ``pilot.<site>``) may declare and read only their
site's job queues and their own reply and control queues, and publish only
claims, events (routing keys of their own site) and dead letters. A
submitter (``user.<name>``) may publish requests to the submitter's API
exchanges, and declare, bind and read its own follow queues, bound only to
its own jobs' endings (a topic permission on the endings exchange); an
operator (a submitter with the production role) may follow everyone's
endings. Answers come by direct reply-to, which needs no permission. The
broker service may do everything in the vhost. The plan is a list of
``rabbitmqctl`` commands, printed for an operator or run here.
"""

from __future__ import annotations

import re
import secrets
import shlex
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from broker import topology
from broker.errors import BrokerRefused, ConfigError
from broker.security import identity

Command = list[str]
#: Runs one rabbitmqctl command (arguments after ``rabbitmqctl``); (exit code, message).
Runner = Callable[[Command], tuple[int, str]]

EVERYTHING = ".*"
NOTHING = "^$"


@dataclass(frozen=True)
class Permissions:
    """A user's configure, write and read regular expressions in the vhost."""

    configure: str
    write: str
    read: str

    def args(self) -> Command:
        """The three regexes as ``set_permissions`` takes them."""
        return [self.configure, self.write, self.read]


def _names(*alternatives: str) -> str:
    return r"^pandamq\.(" + "|".join(alternatives) + r")$"


def pilot_permissions(site: str) -> Permissions:
    """The pilots of ``site``: their job queues, their private queues, claims and events."""
    s = re.escape(site)
    own = (rf"jobs\.{s}\.[A-Z_]+", rf"reply\.{s}\..+", rf"control\.{s}\..+")
    return Permissions(
        configure=_names(*own, "replies", "control"),
        write=_names("claims", "events", "dlx", *own[1:]),
        read=_names(*own, "replies", "control"),
    )


def pilot_topic_permissions(site: str) -> list[Command]:
    """Routing keys a site's pilots may use: their site's on events, replies and control."""
    key = "^" + re.escape(site) + r"\."
    return [
        [topology.EVENTS_EXCHANGE, key, NOTHING],
        [topology.REPLIES_EXCHANGE, NOTHING, key],
        [topology.CONTROL_EXCHANGE, NOTHING, key],
    ]


def submitter_permissions(name: str) -> Permissions:
    """A person: requests to the submitter's API exchanges (the broker service
    declares their queues), and follow queues of their own bound to endings."""
    own = _follow_queues(identity.submitter_user(name))
    return Permissions(
        configure=_names(own),
        write=_names("submit", "tasks", "commands", "queries", own),
        read=_names("endings", own),
    )


def _follow_queues(user: str) -> str:
    return rf"follow\.{re.escape(user)}\..+"


def submitter_topic_permissions(name: str) -> list[Command]:
    """A person binds only to endings routed with their own name first."""
    own = "^" + re.escape(identity.submitter_user(name)) + r"\."
    return [[topology.ENDINGS_EXCHANGE, NOTHING, own]]


def operator_topic_permissions() -> list[Command]:
    """An operator (production role) binds to anyone's endings."""
    return [[topology.ENDINGS_EXCHANGE, NOTHING, EVERYTHING]]


def service_permissions() -> Permissions:
    """The broker service owns the whole topology."""
    return Permissions(EVERYTHING, EVERYTHING, EVERYTHING)


def plan(
    vhost: str,
    sites: Iterable[str],
    submitters: Iterable[str],
    services: Iterable[str],
    operators: Iterable[str] = (),
) -> list[Command]:
    """``rabbitmqctl`` commands that provision the deployment; safe to run again.

    A name among both ``submitters`` and ``operators`` is provisioned as an operator.
    """
    chosen = list(operators)
    people = [n for n in submitters if n not in chosen]
    commands: list[Command] = [["add_vhost", vhost]]
    grants: list[tuple[str, Permissions, list[Command]]] = [
        (identity.service_user(n), service_permissions(), []) for n in services
    ]
    grants += [_person(n, submitter_topic_permissions(n)) for n in people]
    grants += [_person(n, operator_topic_permissions()) for n in chosen]
    grants += [
        (identity.pilot_user(s), pilot_permissions(s), pilot_topic_permissions(s)) for s in sites
    ]
    for user, permissions, topics in grants:
        commands += _user(vhost, user, permissions, topics)
    return commands


def _person(name: str, topics: list[Command]) -> tuple[str, Permissions, list[Command]]:
    return identity.submitter_user(name), submitter_permissions(name), topics


def _user(vhost: str, user: str, permissions: Permissions, topics: list[Command]) -> list[Command]:
    # A random password, cleared at once: these users log in with certificates only.
    return [
        ["add_user", user, secrets.token_hex(24)],
        ["clear_password", user],
        ["set_permissions", "-p", vhost, user, *permissions.args()],
        *(["set_topic_permissions", "-p", vhost, user, *t] for t in topics),
    ]


def shell(commands: Sequence[Command], node: str | None = None) -> str:
    """The commands as shell lines, passwords left out (``add_user`` makes its own)."""
    prefix = ["rabbitmqctl", *(["-n", node] if node else [])]
    lines = []
    for command in commands:
        shown = (
            [*command[:2], '"$(openssl rand -base64 24)"'] if command[0] == "add_user" else command
        )
        lines.append(" ".join([*prefix, *(_quote(a) for a in shown)]))
    return "\n".join(lines)


def _quote(arg: str) -> str:
    return arg if arg.startswith('"$(') else shlex.quote(arg)


def apply(commands: Sequence[Command], run: Runner) -> int:
    """Run the commands; users and vhosts that exist already are fine. How many ran."""
    for command in commands:
        code, message = run(command)
        if code != 0 and not (command[0] in {"add_vhost", "add_user"} and "exists" in message):
            raise BrokerRefused(f"rabbitmqctl {command[0]} failed: {_first_line(message)}")
    return len(commands)


def rabbitmqctl(node: str | None = None) -> Runner:
    """A runner calling the local ``rabbitmqctl`` (as root or the rabbitmq user)."""

    def run(command: Command) -> tuple[int, str]:
        argv = ["rabbitmqctl", "-q", *(["-n", node] if node else []), *command]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ConfigError(f"cannot run rabbitmqctl: {exc}") from exc
        return done.returncode, done.stderr + done.stdout

    return run


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else "no message"
