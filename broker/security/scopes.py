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
tests/broker/security/test_scopes.py checks that each role's scopes grant
exactly what its provisioned permissions grant on the topology's names.
"""

from __future__ import annotations

from urllib.parse import quote

from broker import topology
from broker.security import identity

#: RabbitMQ's ``auth_oauth2.resource_server_id`` for pandamq, by default: the token's
#: audience and the prefix of its scopes.
RESOURCE_SERVER_ID = "pandamq"

ANY = "*"

#: A role's grants: (permission, name pattern) and (permission, exchange, key pattern).
Grants = tuple[list[tuple[str, str]], list[tuple[str, str, str]]]


def pilot_grants(site: str) -> Grants:
    """A site's pilots: their job queues, their private queues, claims and events."""
    jobs = [topology.job_queue_name(site, r) for r in topology.RESOURCE_TYPES]
    own = [f"pandamq.reply.{site}.*", f"pandamq.control.{site}.*"]
    exchanges = [topology.REPLIES_EXCHANGE, topology.CONTROL_EXCHANGE]
    written = [topology.CLAIMS_EXCHANGE, topology.EVENTS_EXCHANGE, topology.DEAD_LETTER_EXCHANGE]
    names = [
        *(("configure", n) for n in [*jobs, *own, *exchanges]),
        *(("write", n) for n in [*written, *own]),
        *(("read", n) for n in [*jobs, *own, *exchanges]),
    ]
    key = f"{site}.*"
    topics = [
        ("write", topology.EVENTS_EXCHANGE, key),
        ("read", topology.REPLIES_EXCHANGE, key),
        ("read", topology.CONTROL_EXCHANGE, key),
    ]
    return names, topics


def submitter_grants(name: str, operator: bool = False) -> Grants:
    """A person: requests to the submitter's API, follow queues bound to endings."""
    user = identity.submitter_user(name)
    own = topology.follow_queue_name(user, ANY)
    api = [
        topology.SUBMIT_EXCHANGE,
        topology.TASKS_EXCHANGE,
        topology.COMMANDS_EXCHANGE,
        topology.QUERIES_EXCHANGE,
    ]
    names = [
        ("configure", own),
        *(("write", n) for n in [*api, own]),
        *(("read", n) for n in [topology.ENDINGS_EXCHANGE, own]),
    ]
    key = ANY if operator else f"{user}.*"
    return names, [("read", topology.ENDINGS_EXCHANGE, key)]


def service_grants() -> Grants:
    """A service: the whole vhost, any routing key."""
    permissions = ("configure", "write", "read")
    return [(p, ANY) for p in permissions], [(p, ANY, ANY) for p in ("write", "read")]


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
        return pilot_grants(site)
    if rabbitmq_user.startswith(identity.USER):
        return submitter_grants(rabbitmq_user[len(identity.USER) :], operator)
    return service_grants()
