"""Virtual pilots: the pilot protocol spoken at full speed, with no payload.

Like wrk against a web server, this measures what pilots cost the broker
service: it takes dispatches from the sites' job queues, claims each job
with the same ``ClaimRequest`` a pilot sends, and reports ``starting``,
``running`` (optionally heartbeats) and ``finished`` with the same
``JobEvent`` messages, on one connection and without waiting for each reply.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from kombu import Connection, Consumer, Message

from broker import topology
from broker.messaging.connection import broker_errors, connect
from broker.messaging.publisher import Outgoing, Publisher, open_publisher
from broker.protocol import ClaimReply, ClaimRequest, EventKind, JobDispatch, JobEvent, decode_body
from broker.protocol import encode as encode_message
from broker.security import identity
from broker.settings import Settings

#: Dispatches each job queue may hand the generator before it acks some.
PREFETCH = 200
DRAIN_S = 0.05
#: Deliveries taken in one go, at most, before answering them.
MAX_DRAIN = 1000
NO_WAIT_S = 0.0005


@dataclass
class LoadStats:
    """What the virtual pilots sent and saw."""

    dispatches: int = 0
    claims: int = 0
    granted: int = 0
    refused: int = 0
    events: int = 0
    heartbeats: int = 0
    heartbeat_started: float = 0.0
    heartbeat_ended: float = 0.0
    #: Seconds from publishing a claim to reading its reply.
    claim_round_trips: list[float] = field(default_factory=list)

    @property
    def messages(self) -> int:
        """Messages the pilots' side consumed and published (heartbeats are events)."""
        return self.dispatches + self.claims + self.granted + self.refused + self.events


class VirtualPilots:
    """Many pilots' worth of protocol traffic on one connection."""

    def __init__(self, settings: Settings, sites: Iterable[str], node: str = "loadgen") -> None:
        self._settings = settings
        self._sites = sorted(sites)
        self._node = node
        self.pilot_id = f"{node}-{uuid.uuid4().hex[:8]}"
        self._topology = topology.Topology(settings.queue_type)
        self._dispatches: list[Message] = []
        self._replies: list[Message] = []
        self._sent_at: dict[tuple[str, int], float] = {}
        self._site_of: dict[tuple[str, int], str] = {}
        #: Jobs reported ``running`` whose end is held back for heartbeats.
        self.running: list[tuple[str, int, str]] = []
        self.stats = LoadStats()

    def run(self, stop: threading.Event, jobs: int, heartbeat_s: float = 0.0) -> LoadStats:
        """Serve until ``jobs`` jobs were claimed and reported (or ``stop``).

        With ``heartbeat_s``, every job stays ``running`` and heartbeats as
        fast as the window allows for that long once all are running; then
        all finish.
        """
        hold_running = heartbeat_s > 0
        with connect(self._settings) as connection, broker_errors(connection, "load generation"):
            publisher = open_publisher(
                connection,
                self._settings.publish_window,
                self._settings.confirm_timeout_s,
                identity.of(self._settings),
            )
            self._consume(connection)
            while not stop.is_set() and self.stats.granted < jobs:
                self._drain(connection)
                self._claim(publisher)
                self._report(publisher, hold_running)
            self._heartbeat_then_finish(publisher, stop, time.monotonic() + heartbeat_s)
        return self.stats

    def _consume(self, connection: Connection) -> None:
        queues = [self._topology.pilot_job_queue(s, "SCORE") for s in self._sites]
        jobs_channel = connection.channel()
        for queue in queues:
            Consumer(
                jobs_channel,
                queues=[queue],
                on_message=self._dispatches.append,
                prefetch_count=PREFETCH,
            ).consume()
        reply_channel = connection.channel()
        # A consumer each: kombu keys a consumer's queues by name, and these have none yet.
        for site in self._sites:
            queue = self._topology.reply_queue(self.pilot_id, site)
            Consumer(reply_channel, [queue], no_ack=True, on_message=self._replies.append).consume()

    def _drain(self, connection: Connection) -> None:
        """Wait up to ``DRAIN_S`` for a delivery, then take every one already there."""
        wait = DRAIN_S
        with contextlib.suppress(TimeoutError):
            for _ in range(MAX_DRAIN):
                connection.drain_events(timeout=wait)
                wait = NO_WAIT_S

    def _claim(self, publisher: Publisher) -> None:
        # The consumers append to these very lists: empty them, never replace them.
        taken = self._dispatches[:]
        self._dispatches.clear()
        requests = []
        for delivery in taken:
            dispatch = decode_body(JobDispatch, delivery.body)
            key = (dispatch.job_id, dispatch.attempt)
            self._sent_at[key] = time.monotonic()
            self._site_of[key] = dispatch.site
            requests.append(self._request(dispatch))
        publisher.publish(
            Outgoing(topology.CLAIMS_EXCHANGE, topology.CLAIMS_KEY, encode_message(r))
            for r in requests
        )
        for delivery in taken:
            delivery.ack()
        self.stats.dispatches += len(taken)
        self.stats.claims += len(requests)

    def _request(self, dispatch: JobDispatch) -> ClaimRequest:
        return ClaimRequest(
            dispatch.job_id,
            dispatch.attempt,
            self.pilot_id,
            dispatch.site,
            reply_to=topology.pilot_address(dispatch.site, self.pilot_id),
            node=self._node,
        )

    def _report(self, publisher: Publisher, hold_running: bool) -> None:
        answered = self._replies[:]
        self._replies.clear()
        events: list[Outgoing] = []
        for message in answered:
            reply = decode_body(ClaimReply, message.body)
            key = (reply.job_id, reply.attempt)
            self.stats.claim_round_trips.append(time.monotonic() - self._sent_at.pop(key))
            if not reply.granted:
                self.stats.refused += 1
                continue
            self.stats.granted += 1
            site = self._site_of.pop(key)
            kinds: tuple[EventKind, ...] = ("starting", "running")
            if hold_running:
                self.running.append((reply.job_id, reply.attempt, site))
            else:
                kinds += ("finished",)
            events += [self._event(reply.job_id, reply.attempt, site, k) for k in kinds]
        self._publish_events(publisher, events)

    def _heartbeat_then_finish(
        self, publisher: Publisher, stop: threading.Event, deadline: float
    ) -> None:
        self.stats.heartbeat_started = time.monotonic()
        while self.running and not stop.is_set() and time.monotonic() < deadline:
            beats = [self._event(j, a, s, "heartbeat") for j, a, s in self.running]
            self._publish_events(publisher, beats)
            self.stats.heartbeats += len(beats)
        self.stats.heartbeat_ended = time.monotonic()
        finished = [self._event(j, a, s, "finished") for j, a, s in self.running]
        self._publish_events(publisher, finished)
        self.running = []

    def _publish_events(self, publisher: Publisher, events: list[Outgoing]) -> None:
        publisher.publish(events)
        self.stats.events += len(events)

    def _event(self, job_id: str, attempt: int, site: str, kind: EventKind) -> Outgoing:
        event = JobEvent(
            uuid.uuid4().hex,
            job_id,
            attempt,
            self.pilot_id,
            kind,
            time.time(),
            0 if kind == "finished" else None,
        )
        return Outgoing(
            topology.EVENTS_EXCHANGE,
            topology.event_routing_key(site, kind),
            encode_message(event),
        )
