"""The OAuth 2 scopes of each pandamq role: what a token must carry for RabbitMQ's
``rabbitmq_auth_backend_oauth2`` to grant the permissions of
``broker.security.provisioning``.

A scope is ``<resource_server_id>.<permission>:<vhost>/<name>`` for a
configure, write or read permission on exchanges and queues, and
``<resource_server_id>.<permission>:<vhost>/<exchange>/<routing key>`` for a
topic permission. Patterns are RabbitMQ's wildcards (``*``: any text), not
regular expressions, and a vhost's ``/`` and ``%`` are percent-encoded. Unlike
internal users, a token with no topic scope for a topic exchange may neither
publish to it nor bind to it, so every role carries the topic scopes it uses.
Both are derived from the one registry, ``broker.security.routes``;
tests/broker/security/test_scopes.py checks that each role's scopes grant
exactly what its provisioned permissions grant on the topology's names.
"""

from __future__ import annotations

from typing import TypeVar
from urllib.parse import quote

from broker.security import identity, provisioning
from broker.security.routes import ROUTES, Role, Who, read_by, sent_by, wildcards

T = TypeVar("T")

#: RabbitMQ's ``auth_oauth2.resource_server_id`` for pandamq, by default: the token's
#: audience and the prefix of its scopes.
RESOURCE_SERVER_ID = "pandamq"

ANY = "*"

#: A role's grants: (permission, name pattern) and (permission, exchange, key pattern).
Grants = tuple[list[tuple[str, str]], list[tuple[str, str, str]]]


def grants(who: Who) -> Grants:
    """``who``'s grants, from the routes as ``provisioning.permissions`` derives its
    permissions: configure server-named (private) queues; write the exchanges it sends on and
    its own queues; read the queues it reads and the exchanges it binds to; on topic
    exchanges, the keys it may publish and bind with."""
    if who.role is Role.SERVICE:
        permissions = ("configure", "write", "read")
        return [(p, ANY) for p in permissions], [(p, ANY, ANY) for p in ("write", "read")]
    reading = [r for r in read_by(who.role) if not r.free]
    own = [n for r in reading if r.private for n in wildcards(r.queue, who)]
    sends = [r.exchange for r in sent_by(who.role) if not r.free]
    binds = [r.exchange for r in reading if r.private]
    queues = [n for r in reading for n in wildcards(r.queue, who)]
    names = [
        *(("configure", n) for n in own),
        *(("write", n) for n in [*sends, *own]),
        *(("read", n) for n in [*queues, *binds]),
    ]
    topics: list[tuple[str, str, str]] = []
    for exchange in sorted({r.exchange for r in ROUTES if r.topic}):
        routes = [r for r in ROUTES if r.exchange == exchange]
        for r in routes:
            if who.role in r.senders:
                topics += [("write", exchange, k) for k in wildcards(r.key, who)]
            if who.role in r.readers and r.private:
                keys = [ANY] if who.role in r.reads_all else wildcards(r.key, who)
                topics += [("read", exchange, k) for k in keys]
    return _unique(names), _unique(topics)


def _unique(items: list[T]) -> list[T]:
    return list(dict.fromkeys(items))


def pilot_grants(site: str, pilot_id: str | None = None) -> Grants:
    """The pilots of ``site`` (or one of them, ``pilot_id``)."""
    return grants(provisioning.pilot(site, pilot_id))


def scopes(grants: Grants, vhost: str, resource_server_id: str = RESOURCE_SERVER_ID) -> list[str]:
    """The scope strings of ``grants`` in ``vhost``."""
    names, topics = grants
    where = quote(vhost, safe="")
    prefix = f"{resource_server_id}."
    return [f"{prefix}{p}:{where}/{n}" for p, n in names] + [
        f"{prefix}{p}:{where}/{x}/{k}" for p, x, k in topics
    ]


def for_user(rabbitmq_user: str, operator: bool = False) -> Grants:
    """The grants of a pandamq RabbitMQ user (``pilot.S``, ``user.N``, ``service.N``)."""
    site = identity.site_of(rabbitmq_user)
    if site is not None:
        return pilot_grants(site, identity.pilot_of(rabbitmq_user))
    if rabbitmq_user.startswith(identity.USER):
        return grants(provisioning.submitter(rabbitmq_user[len(identity.USER) :], operator))
    return grants(Who(Role.SERVICE))
