"""The pilot loop: wait for a job of its site, claim it, run it, report, repeat.

A delivery is never held while the payload runs: the pilot stops consuming
as soon as it has one delivery, claims it, and acks it whatever the answer.
RabbitMQ closes a channel that holds a delivery unacked for longer than its
consumer timeout (30 minutes), and payloads run for hours.

When RabbitMQ goes away the pilot waits it out (``pilot_agent.link``): a
running payload goes on and its events wait in memory, and a claim cut off
before its answer is made again once the pilot is back.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from kombu import Connection, Consumer, Message, Queue

from broker import topology
from broker.error_codes import PilotError
from broker.errors import BadInput, RecoverableError, SiteNotServed, SpecError, UnknownSite
from broker.messaging.dead_letters import dead_letter
from broker.messaging.publisher import Outgoing
from broker.observability.logs import job_context
from broker.protocol import (
    NAME_PATTERN,
    SLOT_TOO_SMALL,
    ClaimReply,
    ClaimRequest,
    EventKind,
    FileInfo,
    JobDispatch,
    JobEvent,
    JobSpec,
    PilotCommand,
    decode_body,
    encode,
)
from broker.security import identity
from broker.settings import Settings
from pilot_agent.link import Link
from pilot_agent.payload import Payload, PayloadNotStarted, Usage
from pilot_agent.storage import Attempt, StagingError, Storage, open_storage
from pilot_agent.supervisor import Outcome, Supervisor

log = logging.getLogger(__name__)

#: How often the pilot wakes up while waiting, to notice a stop or keep AMQP alive.
TICK_S = 0.5
#: AMQP's reply code for a queue that does not exist (a passive declare's answer).
NOT_FOUND = 404
#: How long a look at the connection lasts while a payload runs.
DRAIN_S = 0.01


@dataclass(frozen=True)
class Slot:
    """What this pilot offers: its site and the shape of its batch slot."""

    site: str
    cores: int = 1
    memory_mb: int = 2000
    walltime_s: int | None = None

    def __post_init__(self) -> None:
        if not NAME_PATTERN.match(self.site):
            raise BadInput(f"site {self.site!r} must be 1-64 letters, digits, '_', '.' or '-'")
        if self.cores < 1 or self.memory_mb < 1:
            raise BadInput("a slot needs at least 1 core and 1 MB of memory")
        if self.walltime_s is not None and self.walltime_s < 1:
            raise BadInput("a slot's walltime must be at least 1 second")


def new_pilot_id() -> str:
    """A unique, routing-key-safe name: node, process and a random suffix."""
    node = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())
    return f"{node[:32]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class Pilot:
    """One pilot; ``run`` returns the number of jobs it ran."""

    def __init__(
        self,
        settings: Settings,
        slot: Slot,
        max_jobs: int | None = None,
        pilot_id: str | None = None,
        max_idle_s: float | None = None,
    ) -> None:
        self.settings = settings
        self.slot = slot
        self.max_jobs = max_jobs
        if pilot_id is not None and not NAME_PATTERN.match(pilot_id):
            raise BadInput(f"pilot id {pilot_id!r} must be 1-64 letters, digits, '_', '.' or '-'")
        # A pilot logging in with an identity of its own is the pilot it names.
        self.pilot_id = pilot_id or identity.pilot_of(identity.of(settings)) or new_pilot_id()
        #: Leave after this long without a job (pilots a factory starts); None: never.
        self.max_idle_s = max_idle_s
        self._idle_since = time.monotonic()
        #: Whether RabbitMQ was ever reached: a pilot that never did has failed.
        self.connected = False
        self._topology = topology.Topology(settings.queue_type)
        self._replies: list[Message] = []
        self._commands: list[Message] = []
        self._ran: set[tuple[str, int]] = set()
        #: The claim reply of each attempt granted: its input files and output scope.
        self._grants: dict[tuple[str, int], ClaimReply] = {}
        self._storage: Storage = open_storage(settings, slot.site)
        self._link = Link(settings, f"pilot {self.pilot_id}", self._setup)
        self._jobs_channel: object = None
        #: A job whose claim an outage cut off before the answer came.
        self._claiming: JobDispatch | None = None
        self._started = time.monotonic()
        #: Since when the site's job queues have been found missing; None: found.
        self._queues_missing_since: float | None = None
        #: Whether the site's job queues were ever found: then missing ones are waited for.
        self._queues_found = False

    @property
    def events_waiting(self) -> int:
        """Job events reported but not yet confirmed by RabbitMQ."""
        return self._link.waiting

    def run(self, stop: threading.Event) -> int:
        """Pull and run jobs until ``max_jobs`` or ``stop``."""
        ran = 0
        log.info(
            "pilot %s serving %s with %s",
            self.pilot_id,
            self.slot.site,
            ", ".join(self._resource_types()),
            extra=job_context(pilot_id=self.pilot_id, site=self.slot.site),
        )
        try:
            while not stop.is_set() and (self.max_jobs is None or ran < self.max_jobs):
                if self._idle():
                    log.info("pilot %s: no job for %.0f s, leaving", self.pilot_id, self.max_idle_s)
                    break
                job = self._next_job(stop)
                if job is not None:
                    self._run(job[0], job[1], stop)
                    ran += 1
                    self._idle_since = time.monotonic()
            self._link.finish(stop)
        finally:
            self._link.close()
        return ran

    def _next_job(self, stop: threading.Event) -> tuple[JobSpec, int] | None:
        """Take a delivery and claim it, or claim again what an outage cut off.

        An outage is waited out before, and ends the attempt if it comes during.
        """
        if not self._link.open(stop, self._idle):
            return None
        try:
            with self._link.errors("taking a job"):
                if self._claiming is not None:
                    return self._claim_again(self._claiming)
                delivery = self._next_delivery(stop)
                return self._claim(delivery) if delivery is not None else None
        except RecoverableError as exc:
            self._link.lost(exc)
            return None

    def _resource_types(self) -> list[str]:
        return topology.resource_types_served(self.slot.cores, self.slot.memory_mb)

    def _job_queues(self) -> list[Queue]:
        """The site's queues of every resource type this slot serves, largest first."""
        return [self._topology.pilot_job_queue(self.slot.site, r) for r in self._resource_types()]

    def _setup(self, connection: Connection) -> None:
        """Declare the pilot's queues and consume its replies and commands (on each connect)."""
        self.connected = True
        self._require_job_queues(connection)
        private = connection.channel()
        # New server-named queues on each connection, bound with the pilot's own key: what
        # was routed to it while none was bound is lost, as with any exclusive queue (a claim
        # is made again, a kill told again at the next heartbeat).
        for queue, into in (
            (self._topology.reply_queue(self.pilot_id, self.slot.site), self._replies),
            (self._topology.control_queue(self.pilot_id, self.slot.site), self._commands),
        ):
            # The consumer declares and binds it (once: RabbitMQ refuses ``amq.*`` again).
            Consumer(private, queues=[queue], no_ack=True, on_message=into.append).consume()
        self._jobs_channel = connection.channel()

    def _require_job_queues(self, connection: Connection) -> None:
        """Check that the site's job queues exist, without creating any: the broker
        service declares those of every site in the catalogue.

        Missing, they are looked for again (``SiteNotServed``, counted in the backoff's
        log lines), since a site added to the catalogue gets its queues within a
        brokerage interval; after ``site_queues_wait_s`` a pilot that never found
        them refuses to run. One that did (a RabbitMQ that lost its queues, maybe
        while a payload runs) waits for the broker service to declare them again.
        """
        try:
            for queue in self._job_queues():
                queue.bind(connection.default_channel).queue_declare(passive=True)
        except connection.channel_errors as exc:
            # py-amqp gives the reply code as a number, kombu's memory transport as text.
            if str(getattr(exc, "reply_code", "")) != str(NOT_FOUND):
                raise
            self._queues_missing(queue.name)
        self._queues_missing_since = None
        self._queues_found = True

    def _queues_missing(self, name: str) -> None:
        """Raise ``SiteNotServed`` to look again later, or ``UnknownSite`` once waited enough."""
        now = time.monotonic()
        since = self._queues_missing_since = self._queues_missing_since or now
        site = self.slot.site
        why = (
            f"site {site} is not in the catalogue, or the broker service has not declared "
            f"its queues yet (no queue {name})"
        )
        if not self._queues_found and now - since >= self.settings.site_queues_wait_s:
            raise UnknownSite(
                f"{why} after {now - since:.0f} s: add the site (`pandamq sites add {site}`) "
                "and run `pandamq serve`, or correct --site"
            )
        raise SiteNotServed(why)

    def _next_delivery(self, stop: threading.Event) -> Message | None:
        """The first job waiting in the largest queue that has one, else the first to come."""
        for queue in self._job_queues():
            message = queue.bind(self._jobs_channel).get(no_ack=False)
            if message is not None:
                return message
        return self._consume_one(stop)

    def _consume_one(self, stop: threading.Event) -> Message | None:
        """Consume until one delivery arrives, then stop consuming.

        Each queue's consumer has a prefetch of 1 (quorum queues refuse a
        channel-wide limit), so several queues may deliver at once: the pilot
        keeps the first and puts the others straight back.
        """
        got: list[Message] = []
        queues = self._job_queues()
        # Not declared: a pilot never creates a job queue (see _require_job_queues).
        consumer = Consumer(
            self._jobs_channel,
            queues=queues,
            on_message=got.append,
            prefetch_count=1,
            auto_declare=False,
        )
        consumer.consume()
        try:
            while not got and not stop.is_set() and not self._idle():
                self._tick()
        finally:
            consumer.cancel()
        for extra in got[1:]:
            extra.requeue()
        return got[0] if got else None

    def _idle(self) -> bool:
        """True once the pilot has waited ``max_idle_s`` for a job."""
        if self.max_idle_s is None:
            return False
        return time.monotonic() - self._idle_since > self.max_idle_s

    def _tick(self) -> None:
        self._link.drain(TICK_S)

    def _claim(self, delivery: Message) -> tuple[JobSpec, int] | None:
        """Ask the broker for the delivered job; ack the delivery once answered."""
        try:
            dispatch = decode_body(JobDispatch, delivery.body)
        except SpecError as exc:
            site, resource = delivery.delivery_info["routing_key"].rsplit(".", 1)
            queue = topology.job_queue_name(site, resource)
            dead_letter(self._link, queue, [(delivery.body, str(exc))])
            delivery.ack()
            return None
        if (dispatch.job_id, dispatch.attempt) in self._ran:
            delivery.ack()
            return None
        self._claiming = dispatch
        reply = self._ask(dispatch)
        if reply is None:
            delivery.requeue()
        else:
            delivery.ack()
        self._claiming = None
        return None if reply is None else self._granted(dispatch, reply)

    def _claim_again(self, dispatch: JobDispatch) -> tuple[JobSpec, int] | None:
        """Repeat a claim an outage cut off; RabbitMQ has put its delivery back already."""
        log.info("pilot %s: claiming job %s again after an outage", self.pilot_id, dispatch.job_id)
        reply = self._ask(dispatch)
        self._claiming = None
        return None if reply is None else self._granted(dispatch, reply)

    def _granted(self, dispatch: JobDispatch, reply: ClaimReply) -> tuple[JobSpec, int] | None:
        """The job to run if the claim was granted; a refusal is logged."""
        if not reply.granted or reply.job is None:
            log.info(
                "pilot %s: claim of job %s refused: %s",
                self.pilot_id,
                dispatch.job_id,
                reply.reason,
                extra=job_context(
                    job_id=dispatch.job_id, pilot_id=self.pilot_id, site=self.slot.site
                ),
            )
            if reply.reason.startswith(SLOT_TOO_SMALL):
                # the job is back in the queue for a larger slot: do not take it again at once
                self._tick()
            return None
        self._ran.add((dispatch.job_id, dispatch.attempt))
        self._grants[(dispatch.job_id, dispatch.attempt)] = reply
        return reply.job, dispatch.attempt

    def _walltime_left(self) -> int:
        """Seconds the slot has left (0: not limited)."""
        if self.slot.walltime_s is None:
            return 0
        return max(1, int(self.slot.walltime_s - (time.monotonic() - self._started)))

    def _ask(self, dispatch: JobDispatch) -> ClaimReply | None:
        request = ClaimRequest(
            dispatch.job_id,
            dispatch.attempt,
            self.pilot_id,
            self.slot.site,
            reply_to=topology.pilot_address(self.slot.site, self.pilot_id),
            node=socket.gethostname(),
            cores=self.slot.cores,
            memory_mb=self.slot.memory_mb,
            walltime_s=self._walltime_left(),
        )
        self._link.publish(
            [Outgoing(topology.CLAIMS_EXCHANGE, topology.CLAIMS_KEY, encode(request))]
        )
        deadline = time.monotonic() + self.settings.claim_timeout_s
        while time.monotonic() < deadline:
            while self._replies:
                reply = decode_body(ClaimReply, self._replies.pop(0).body)
                if (reply.job_id, reply.attempt) == (dispatch.job_id, dispatch.attempt):
                    return reply
            self._tick()
        log.warning(
            "pilot %s: no answer to claim of job %s within %.0f s",
            self.pilot_id,
            dispatch.job_id,
            self.settings.claim_timeout_s,
        )
        return None

    def _run(self, spec: JobSpec, attempt: int, stop: threading.Event) -> None:
        work_dir = Path(self.settings.work_dir) / self.pilot_id / f"{spec.id}.{attempt}"
        grant = self._grants.pop((spec.id, attempt))
        self._report(spec, attempt, "starting")
        try:
            work_dir.mkdir(parents=True, exist_ok=True)
            self._storage.stage_in(grant.input_files, work_dir)
            payload = Payload(spec, work_dir)
        except StagingError as exc:
            self._report(spec, attempt, "failed", error_code=exc.code, diagnostic=str(exc))
            return
        except (PayloadNotStarted, OSError) as exc:
            self._report(
                spec,
                attempt,
                "failed",
                error_code=PilotError.PAYLOAD_NOT_STARTED,
                diagnostic=str(exc),
            )
            return
        self._report(spec, attempt, "running")
        supervisor = Supervisor(
            payload,
            spec,
            self.settings.heartbeat_interval_s,
            self.settings.kill_grace_s,
            heartbeat=lambda: self._report(spec, attempt, "heartbeat"),
            kill_reason=lambda: self._kill_reason(spec.id, attempt),
            stop=stop,
            memory_check_s=self.settings.memory_check_s,
        )
        outcome = supervisor.run()
        self._finish(Attempt(spec, attempt, grant.output_scope), work_dir, outcome, payload.usage())

    def _finish(self, staged: Attempt, work_dir: Path, outcome: Outcome, usage: Usage) -> None:
        """Stage out, then report how the attempt ended (a missing output fails it) and
        what its payload used."""
        spec, attempt = staged.spec, staged.number
        stored = self._storage.stage_out(staged, work_dir, outcome.kind == "finished")
        if outcome.kind == "finished" and stored.problem:
            outcome = Outcome(
                "failed", outcome.exit_code, PilotError.STAGE_OUT_FAILED, stored.problem
            )
        self._report(
            spec,
            attempt,
            outcome.kind,
            outcome.exit_code,
            outcome.error_code,
            outcome.diagnostic,
            stored.files,
            usage if outcome.kind in ("finished", "failed") else None,
        )

    def _kill_reason(self, job_id: str, attempt: int) -> str | None:
        """Why the broker asked to kill this attempt, if it did (the connection is served too)."""
        self._drain()
        reason = None
        while self._commands:
            try:
                command = decode_body(PilotCommand, self._commands.pop(0).body)
            except SpecError as exc:
                log.warning("pilot %s ignored a bad command: %s", self.pilot_id, exc)
                continue
            if (command.job_id, command.attempt) == (job_id, attempt):
                reason = command.reason
        return reason

    def _drain(self) -> None:
        """Handle whatever the connection has received, without waiting (nor failing)."""
        self._link.keep_up(DRAIN_S)

    def _report(
        self,
        spec: JobSpec,
        attempt: int,
        kind: EventKind,
        exit_code: int | None = None,
        error_code: int | None = None,
        diagnostic: str = "",
        files: list[FileInfo] | None = None,
        usage: Usage | None = None,
    ) -> None:
        event = JobEvent(
            uuid.uuid4().hex,
            spec.id,
            attempt,
            self.pilot_id,
            kind,
            time.time(),
            exit_code,
            None if error_code is None else int(error_code),
            diagnostic,
            files or [],
            peak_rss_mb=None if usage is None else usage.peak_rss_mb,
            cpu_time_s=None if usage is None else usage.cpu_time_s,
            wall_time_s=None if usage is None else usage.wall_time_s,
        )
        self._link.send(
            Outgoing(
                topology.EVENTS_EXCHANGE,
                topology.event_routing_key(self.slot.site, kind),
                encode(event),
            )
        )
