"""Exchange and queue names, and their idempotent declaration, in one place.

Standard library and kombu only: the pilot imports this module.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kombu import Exchange, Queue, binding

# RabbitMQ's permissions are regular expressions over names, and one name may be a
# queue and an exchange at once: so every exchange is ``pandamq.<word>``, every
# queue of the service's ``pandamq.service.<word>``, every site's job queue
# ``pandamq.jobs.<site>.<resource_type>``, and every private queue (a pilot's replies
# and commands, a follower's endings) server-named, ``amq.gen-...``: RabbitMQ
# refuses to let anyone declare an exchange (or a queue) of that prefix, so a
# permission on private queues reaches no exchange at all (docs/protocol.md, names).
SERVICE_QUEUE_PREFIX = "pandamq.service."


def service_queue_name(word: str) -> str:
    """A queue the broker service consumes: ``pandamq.service.<word>``."""
    return SERVICE_QUEUE_PREFIX + word


SUBMIT_EXCHANGE = "pandamq.submit"
SUBMIT_KEY = "pandamq.submit"
SUBMIT_QUEUE = service_queue_name("submit")
JOBS_EXCHANGE = "pandamq.jobs"
EVENTS_EXCHANGE = "pandamq.events"
EVENTS_QUEUE = service_queue_name("events")
CLAIMS_EXCHANGE = "pandamq.claims"
CLAIMS_KEY = "pandamq.claims"
CLAIMS_QUEUE = service_queue_name("claims")
REPLIES_EXCHANGE = "pandamq.replies"
CONTROL_EXCHANGE = "pandamq.control"
COMMANDS_EXCHANGE = "pandamq.commands"
COMMANDS_KEY = "pandamq.commands"
COMMANDS_QUEUE = service_queue_name("commands")
TASKS_EXCHANGE = "pandamq.tasks"
TASKS_KEY = "pandamq.tasks"
TASKS_QUEUE = service_queue_name("tasks")
QUERIES_EXCHANGE = "pandamq.queries"
QUERIES_KEY = "pandamq.queries"
QUERIES_QUEUE = service_queue_name("queries")
ENDINGS_EXCHANGE = "pandamq.endings"
DEAD_LETTER_EXCHANGE = "pandamq.dlx"
DEAD_LETTER_QUEUE = service_queue_name("dead")

#: Every exchange of the topology.
EXCHANGES = (
    SUBMIT_EXCHANGE,
    TASKS_EXCHANGE,
    COMMANDS_EXCHANGE,
    QUERIES_EXCHANGE,
    CLAIMS_EXCHANGE,
    EVENTS_EXCHANGE,
    JOBS_EXCHANGE,
    REPLIES_EXCHANGE,
    CONTROL_EXCHANGE,
    ENDINGS_EXCHANGE,
    DEAD_LETTER_EXCHANGE,
)

#: The service's queues' names before they moved to ``pandamq.service.<word>`` (each
#: was its exchange's name): the service moves what they still hold (``broker.messaging.renames``).
OLD_QUEUE_NAMES = {
    "pandamq.submit": SUBMIT_QUEUE,
    "pandamq.tasks": TASKS_QUEUE,
    "pandamq.commands": COMMANDS_QUEUE,
    "pandamq.queries": QUERIES_QUEUE,
    "pandamq.claims": CLAIMS_QUEUE,
    "pandamq.events": EVENTS_QUEUE,
    "pandamq.dead": DEAD_LETTER_QUEUE,
}

#: A private queue, as RabbitMQ names it when a client declares a queue of no name
#: (``<tag>``: its random part); exclusive to the connection that declared it.
PRIVATE_QUEUE = "amq.gen-<tag>"
#: The name a client declares a private queue with: RabbitMQ chooses one.
SERVER_NAMED = ""

#: RabbitMQ's pseudo-queue for answers without a queue of the asker's own (direct reply-to).
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
#: A query nobody took within this time is dropped: its asker has given up.
QUERY_TTL_MS = 60_000
#: The owner word of a job that has no recorded owner, in endings' routing keys.
NO_OWNER = "-"
#: The task word of a job outside any task, in endings' routing keys.
NO_TASK = "-"

#: Header on a dead-lettered message that says why it was refused.
REASON_HEADER = "x-pandamq-reason"

#: Memory per core above which a job is high-memory (PanDA's *_HIMEM).
HIMEM_MB_PER_CORE = 2000

RESOURCE_TYPES = ("SCORE", "SCORE_HIMEM", "MCORE", "MCORE_HIMEM")


def resource_type(cores: int, memory_mb: int) -> str:
    """PanDA's resource class of a job or slot shape."""
    base = "SCORE" if cores <= 1 else "MCORE"
    return base + "_HIMEM" if memory_mb / max(cores, 1) > HIMEM_MB_PER_CORE else base


def resource_types_served(cores: int, memory_mb: int) -> list[str]:
    """The resource classes a slot of this shape can take jobs from, largest first."""
    served = ["SCORE"]
    if memory_mb > HIMEM_MB_PER_CORE:
        served.insert(0, "SCORE_HIMEM")
    if cores > 1:
        served.insert(0, "MCORE")
        if memory_mb / cores > HIMEM_MB_PER_CORE:
            served.insert(0, "MCORE_HIMEM")
    return served


def job_queue_name(site: str, resource: str) -> str:
    """``pandamq.jobs.<site>.<resource_type>``."""
    return f"pandamq.jobs.{site}.{resource}"


def job_routing_key(site: str, resource: str) -> str:
    """Routing key on the jobs exchange for a site's resource-type queue."""
    return f"{site}.{resource}"


def pilot_address(site: str, pilot_id: str) -> str:
    """Routing key of one pilot's replies and commands: ``<site>.<pilot_id>``.

    It starts with the site, so RabbitMQ's topic permissions can keep a
    site's pilots to their own site's keys.
    """
    return f"{site}.{pilot_id}"


def control_routing_key(site: str, pilot_id: str) -> str:
    """Routing key on the control exchange for one pilot: ``<site>.<pilot_id>``."""
    return pilot_address(site, pilot_id)


def job_ending_key(owner: str | None, task_id: str | None, job_id: str) -> str:
    """Routing key of a job's ending: ``<owner>.<task id or ->.<job id>``.

    It starts with the owner, so RabbitMQ's topic permissions (read pattern
    ``^{username}\\.``) let a person bind only to their own jobs' endings.
    """
    return f"{owner or NO_OWNER}.{task_id or NO_TASK}.{job_id}"


def task_ending_key(owner: str | None, task_id: str) -> str:
    """Routing key of a task's ending: ``<owner>.<task id>``."""
    return f"{owner or NO_OWNER}.{task_id}"


def event_routing_key(site: str, kind: str) -> str:
    """Routing key on the events exchange: ``<site>.<kind>``."""
    return f"{site}.{kind}"


@dataclass(frozen=True)
class Topology:
    """Builds kombu entities with the deployment's queue type."""

    queue_type: str = "classic"

    def _arguments(self) -> dict[str, Any]:
        return {"x-queue-type": self.queue_type, "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE}

    def _durable(self, name: str, exchange: Exchange, routing_key: str) -> Queue:
        return Queue(
            name,
            exchange,
            routing_key=routing_key,
            durable=True,
            queue_arguments=self._arguments(),
        )

    def submit_queue(self) -> Queue:
        """Where submissions wait for the broker service."""
        return self._durable(SUBMIT_QUEUE, Exchange(SUBMIT_EXCHANGE, "direct"), SUBMIT_KEY)

    def claims_queue(self) -> Queue:
        """Where pilots' claim requests wait for the broker service."""
        return self._durable(CLAIMS_QUEUE, Exchange(CLAIMS_EXCHANGE, "direct"), CLAIMS_KEY)

    def commands_queue(self) -> Queue:
        """Where people's kill and retry commands wait for the broker service."""
        return self._durable(COMMANDS_QUEUE, Exchange(COMMANDS_EXCHANGE, "direct"), COMMANDS_KEY)

    def tasks_queue(self) -> Queue:
        """Where task submissions wait for the broker service."""
        return self._durable(TASKS_QUEUE, Exchange(TASKS_EXCHANGE, "direct"), TASKS_KEY)

    def queries_queue(self) -> Queue:
        """Where submitters' queries wait for the broker service; non-persistent, and
        dropped after ``QUERY_TTL_MS`` (their asker is gone by then)."""
        return Queue(
            QUERIES_QUEUE,
            Exchange(QUERIES_EXCHANGE, "direct"),
            routing_key=QUERIES_KEY,
            durable=True,
            queue_arguments={"x-queue-type": self.queue_type, "x-message-ttl": QUERY_TTL_MS},
        )

    def follow_queue(self, keys: Iterable[str]) -> Queue:
        """A follower's private, server-named queue, bound to the endings it follows.

        The follower binds to the endings exchange but leaves its declaration to
        the broker service: declaring needs configure permission on the exchange,
        which a submitter does not hold.
        """
        exchange = Exchange(ENDINGS_EXCHANGE, "topic", durable=True, no_declare=True)
        return _private(exchange, bindings=[binding(exchange, key) for key in keys])

    def endings_exchange(self) -> Exchange:
        """Jobs and tasks that ended, routed ``<owner>.<task>.<job>`` and ``<owner>.<task>``."""
        return Exchange(ENDINGS_EXCHANGE, "topic", durable=True)

    def events_queue(self) -> Queue:
        """Where pilots' job events wait for the broker service."""
        return self._durable(EVENTS_QUEUE, Exchange(EVENTS_EXCHANGE, "topic"), "#")

    def job_queue(self, site: str, resource: str) -> Queue:
        """One site's queue of activated jobs of one resource type."""
        return self._durable(
            job_queue_name(site, resource),
            self.jobs_exchange(),
            job_routing_key(site, resource),
        )

    def dead_letter_queue(self) -> Queue:
        """Where refused messages go, with a reason header."""
        return Queue(
            DEAD_LETTER_QUEUE,
            Exchange(DEAD_LETTER_EXCHANGE, "fanout"),
            durable=True,
            queue_arguments={"x-queue-type": self.queue_type},
        )

    def pilot_job_queue(self, site: str, resource: str) -> Queue:
        """A job queue as a pilot declares it: the same queue, its binding left to the broker.

        Binding needs read permission on the jobs exchange, which would let a
        pilot bind its queue to another site's key.
        """
        return Queue(
            job_queue_name(site, resource), durable=True, queue_arguments=self._arguments()
        )

    def reply_queue(self, pilot_id: str, site: str) -> Queue:
        """A pilot connection's private, server-named queue of claim replies."""
        return self._pilots(self.replies_exchange(), site, pilot_id)

    def control_queue(self, pilot_id: str, site: str) -> Queue:
        """A pilot connection's private, server-named queue of commands (kill)."""
        return self._pilots(self.control_exchange(), site, pilot_id)

    def _pilots(self, exchange: Exchange, site: str, pilot_id: str) -> Queue:
        # The exchange is the broker service's to declare: a pilot may not configure it.
        exchange = Exchange(exchange.name, exchange.type, durable=True, no_declare=True)
        return _private(exchange, routing_key=pilot_address(site, pilot_id))

    def replies_exchange(self) -> Exchange:
        """Claim replies, routed ``<site>.<pilot_id>``."""
        return Exchange(REPLIES_EXCHANGE, "topic", durable=True)

    def jobs_exchange(self) -> Exchange:
        """Activated jobs, routed ``<site>.<resource_type>``."""
        return Exchange(JOBS_EXCHANGE, "direct", durable=True)

    def control_exchange(self) -> Exchange:
        """Commands to pilots, routed ``<site>.<pilot_id>``."""
        return Exchange(CONTROL_EXCHANGE, "topic", durable=True)

    def service_queues(self) -> list[Queue]:
        """The queues the broker service consumes or owns."""
        return [
            self.submit_queue(),
            self.claims_queue(),
            self.events_queue(),
            self.commands_queue(),
            self.dead_letter_queue(),
            self.tasks_queue(),
            self.queries_queue(),
        ]

    def site_queues(self, sites: Iterable[str]) -> list[Queue]:
        """Every resource-type queue of the given sites."""
        return [self.job_queue(s, r) for s in sites for r in RESOURCE_TYPES]


def _private(exchange: Exchange, **bound: Any) -> Queue:
    """A queue of one connection's own: server-named (RabbitMQ names it when it is
    declared, anew on each connection), exclusive and gone with its connection.

    Declare it once (a consumer does): RabbitMQ refuses to declare a queue named
    ``amq.*`` again, even its own. One consumer each: kombu keys a consumer's queues
    by name, so nameless ones would replace each other.
    """
    return Queue(SERVER_NAMED, exchange, exclusive=True, auto_delete=True, durable=False, **bound)


def declare(channel: Any, queues: Iterable[Queue], exchanges: Iterable[Exchange] = ()) -> None:
    """Declare exchanges, queues and bindings; safe to repeat."""
    for exchange in exchanges:
        exchange.bind(channel).declare()
    for queue in queues:
        queue.bind(channel).declare()
