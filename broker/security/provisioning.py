"""RabbitMQ for a deployment: the vhost, a user per service, per pilot (or per
site's pilots) and per submitter, and the permissions that keep each to its
own part, all derived from the one registry of routes
(``broker.security.routes``).

A pilot (user ``pilot.<site>:<pilot_id>``, or ``pilot.<site>`` shared by a
site's pilots) may read only its site's job queues, declare only private
queues that RabbitMQ names (``amq.gen-*``, exclusive to the connection that
declared them, so no other may use, bind, purge or delete them), bind them
only with its own keys, and publish only claims, events (routing keys of its
own site) and dead letters. A submitter (``user.<name>``) may publish
requests to the submitter's API exchanges, and declare and read private
queues of its own, bound only to its own jobs' endings (a topic permission
on the endings exchange); an operator (a submitter with the production
role) may bind to everyone's endings. Nobody but the service may declare or
delete an exchange: the only names others may configure are ``amq.gen-*``,
and RabbitMQ refuses any exchange (and any queue a client names) of the
``amq.`` prefix. Answers come by direct reply-to, which needs no
permission. The broker service may do everything in the vhost. The plan is
a list of ``rabbitmqctl`` commands, printed for an operator or run here.
"""

from __future__ import annotations

import re
import secrets
import shlex
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from broker.errors import BadInput, BrokerRefused, ConfigError
from broker.protocol import NAME_PATTERN
from broker.security import identity
from broker.security.routes import ROUTES, Role, Who, anchored, pattern, read_by, sent_by

Command = list[str]
#: Runs one rabbitmqctl command (arguments after ``rabbitmqctl``); (exit code, message).
Runner = Callable[[Command], tuple[int, str]]

EVERYTHING = ".*"
NOTHING = "^$"
#: A binding key of any shape (``#`` too), for a reader that may bind to anyone's.
ANY_KEY = ".*"


@dataclass(frozen=True)
class Permissions:
    """A user's configure, write and read regular expressions in the vhost."""

    configure: str
    write: str
    read: str

    def args(self) -> Command:
        """The three regexes as ``set_permissions`` takes them."""
        return [self.configure, self.write, self.read]


def permissions(who: Who) -> Permissions:
    """``who``'s permissions, from the routes: configure server-named (private) queues; write
    the exchanges it sends on and its own queues (binding needs it); read the queues
    it reads and the exchanges it binds its own queues to."""
    if who.role is Role.SERVICE:
        return Permissions(EVERYTHING, EVERYTHING, EVERYTHING)
    reading = [r for r in read_by(who.role) if not r.free]
    own = [pattern(r.queue, who) for r in reading if r.private]
    sends = [re.escape(r.exchange) for r in sent_by(who.role) if not r.free]
    binds = [re.escape(r.exchange) for r in reading if r.private]
    return Permissions(
        configure=anchored(own),
        write=anchored(sends + own),
        read=anchored([pattern(r.queue, who) for r in reading] + binds),
    )


def topic_permissions(who: Who) -> list[Command]:
    """``who``'s routing keys on each topic exchange it publishes to or binds to: those
    it may publish with, and those it may bind its own queues with (none for the
    service: it may use any). Other exchanges it may neither write nor read at all."""
    if who.role is Role.SERVICE:
        return []
    exchanges = sorted({r.exchange for r in ROUTES if r.topic})
    commands = []
    for exchange in exchanges:
        routes = [r for r in ROUTES if r.exchange == exchange]
        write = [pattern(r.key, who) for r in routes if who.role in r.senders]
        read = [
            ANY_KEY if who.role in r.reads_all else pattern(r.key, who)
            for r in routes
            if who.role in r.readers and r.private
        ]
        if write or read:
            commands.append([exchange, anchored(write), anchored(read)])
    return commands


def pilot(site: str, pilot_id: str | None = None) -> Who:
    """A pilot of ``site``: one with an identity of its own, or (None) all of them."""
    return Who(Role.PILOT, site=site, pilot=pilot_id)


def submitter(name: str, operator: bool = False) -> Who:
    """A person, ``user.<name>``; an operator binds to everyone's endings."""
    role = Role.OPERATOR if operator else Role.SUBMITTER
    return Who(role, user=identity.submitter_user(name))


def pilot_permissions(site: str, pilot_id: str | None = None) -> Permissions:
    """The pilots of ``site`` (or one of them): their job queues, their private queues,
    claims, events and dead letters."""
    return permissions(pilot(site, pilot_id))


def pilot_topic_permissions(site: str, pilot_id: str | None = None) -> list[Command]:
    """Routing keys a site's pilots may use: their site's on events, their own on replies
    and control."""
    return topic_permissions(pilot(site, pilot_id))


def submitter_permissions(name: str) -> Permissions:
    """A person: requests to the submitter's API exchanges (the broker service
    declares their queues), and follow queues of their own bound to endings."""
    return permissions(submitter(name))


def submitter_topic_permissions(name: str) -> list[Command]:
    """A person binds only to endings routed with their own name first."""
    return topic_permissions(submitter(name))


def operator_topic_permissions(name: str) -> list[Command]:
    """An operator (production role) binds to anyone's endings."""
    return topic_permissions(submitter(name, operator=True))


def service_permissions() -> Permissions:
    """The broker service owns the whole topology."""
    return permissions(Who(Role.SERVICE))


def parse_pilot(value: str) -> tuple[str, str | None]:
    """``SITE`` (every pilot of the site) or ``SITE:PILOT_ID`` (one pilot) as (site, id)."""
    site, sep, pilot_id = value.partition(identity.PILOT_SEPARATOR)
    return site, (pilot_id if sep else None)


def pilot_user_of(value: str) -> str:
    """The RabbitMQ user that ``--pilot SITE`` or ``--pilot SITE:PILOT_ID`` names;
    ``BadInput`` unless each part is a name."""
    site, pilot_id = parse_pilot(value)
    for part in (site, pilot_id):
        if part is not None and not NAME_PATTERN.match(part):
            raise BadInput(
                f"--pilot {value!r} must be 1-64 letters, digits, '_', '.' or '-' "
                "(SITE, or SITE:PILOT_ID each so)"
            )
    return identity.pilot_user(site, pilot_id)


def plan(
    vhost: str,
    sites: Iterable[str],
    submitters: Iterable[str],
    services: Iterable[str],
    operators: Iterable[str] = (),
    pilots: Iterable[tuple[str, str]] = (),
) -> list[Command]:
    """``rabbitmqctl`` commands that provision the deployment; safe to run again.

    ``sites`` get one user shared by their pilots, ``pilots`` (site, pilot id) one
    user each. A name among both ``submitters`` and ``operators`` is provisioned as
    an operator.
    """
    chosen = list(operators)
    people = [n for n in submitters if n not in chosen]
    whos = [Who(Role.SERVICE) for _ in services]
    users = [identity.service_user(n) for n in services]
    for name, operator in [(n, False) for n in people] + [(n, True) for n in chosen]:
        whos.append(submitter(name, operator))
        users.append(identity.submitter_user(name))
    for site in sites:
        whos.append(pilot(site))
        users.append(identity.pilot_user(site))
    for site, pilot_id in pilots:
        whos.append(pilot(site, pilot_id))
        users.append(identity.pilot_user(site, pilot_id))
    commands: list[Command] = [["add_vhost", vhost]]
    for user, who in zip(users, whos, strict=True):
        commands += _user(vhost, user, permissions(who), topic_permissions(who))
    return commands


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


def definitions(commands: Sequence[Command]) -> dict[str, object]:
    """The plan as RabbitMQ definitions, for ``rabbitmqctl import_definitions``: one
    call instead of one per command. Users come without a password (certificate login
    only); importing replaces the password of a user that has one."""
    users: list[dict[str, object]] = []
    vhosts, grants, topics = [], [], []
    for command in commands:
        verb, args = command[0], command[1:]
        if verb == "add_vhost":
            vhosts.append({"name": args[0]})
        elif verb == "add_user":
            users.append(
                {
                    "name": args[0],
                    "password_hash": "",
                    "hashing_algorithm": "rabbit_password_hashing_sha256",
                    "tags": [],
                }
            )
        elif verb == "set_permissions":
            vhost, user, configure, write, read = args[1:]
            grants.append(
                {"user": user, "vhost": vhost, "configure": configure, "write": write, "read": read}
            )
        elif verb == "set_topic_permissions":
            vhost, user, exchange, write, read = args[1:]
            topics.append(
                {"user": user, "vhost": vhost, "exchange": exchange, "write": write, "read": read}
            )
    return {"users": users, "vhosts": vhosts, "permissions": grants, "topic_permissions": topics}
