"""A pilot's messages on three AMQP clients, in one invocation, alternating::

    .venv/bin/pip install pika
    python benchmarks/pilot_amqp.py --jobs 2000 --rounds 3

Per job, as ``pilot_agent`` does it: take one dispatch message from the site's
job queue (``basic.get``, acked once the claim is answered); publish a claim
that names the pilot's reply queue, confirmed, and wait for its answer there;
then publish three job events (``starting``, ``running``, the end), each
confirmed before the next. No payload runs between them, so the figures are
the messaging of a job's life and nothing else.

The clients:

- ``kombu``: what the pilot runs today, py-amqp under kombu, through the
  project's own ``open_publisher`` (confirms) and kombu's ``Queue.get`` and
  ``Consumer``;
- ``amqp``: py-amqp's channel directly, the same calls without kombu;
- ``pika``: pika's ``BlockingConnection``, ``confirm_delivery``.

A responder process (py-amqp) answers the claims and acks the events for all
three. Each client runs in a process of its own, in turn, ``--rounds`` times;
it reports its own CPU time per job (what the pilot's process spends) and the
wall time per job (which adds the round trips it waits for). The vhost is
made for the run and deleted after it (``rabbitmqctl``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import amqp

JOBS_QUEUE = "bench.jobs.SITE.SCORE"
CLAIMS = "bench.claims"
EVENTS = "bench.events"
USER = "guest"
#: A dispatch message, a claim, a claim's answer and an event, of their real sizes.
DISPATCH = json.dumps({"job_id": "j" * 32, "attempt": 1, "priority": 0}).encode()
CLAIM = {"job_id": "j" * 32, "attempt": 1, "pilot_id": "p" * 12, "site": "SITE",
         "reply_to": "", "node": "wn001", "cores": 1, "memory_mb": 2000,
         "walltime_s": 86400}  # fmt: skip
ANSWER = json.dumps({"job_id": "j" * 32, "attempt": 1, "granted": True, "reason": "",
                     "job": {"id": "j" * 32, "command": "true", "args": [], "env": {},
                             "inputs": [], "outputs": [], "site": "SITE"}}).encode()  # fmt: skip
EVENT = json.dumps({"event_id": "e" * 32, "job_id": "j" * 32, "attempt": 1,
                    "pilot_id": "p" * 12, "kind": "running", "at": 0.0,
                    "diagnostic": "", "files": []}).encode()  # fmt: skip


def _claim(reply_queue: str) -> bytes:
    return json.dumps({**CLAIM, "reply_to": reply_queue}).encode()


def _channel(url: str, confirm: bool = False) -> tuple[amqp.Connection, amqp.Channel]:
    """A connection and a channel; with ``confirm``, each publish waits for its confirm
    (py-amqp's ``confirm_publish``: ``confirm_select`` alone does not wait)."""
    parsed = _parts(url)
    connection = amqp.Connection(**parsed, confirm_publish=confirm)
    connection.connect()
    return connection, connection.channel()


def _parts(url: str) -> dict[str, Any]:
    from kombu.utils.url import url_to_parts

    _, host, port, user, password, vhost, _ = url_to_parts(url)
    return {
        "host": f"{host}:{port or 5672}",
        "userid": user,
        "password": password,
        "virtual_host": vhost or "/",
    }


def declare(url: str) -> None:
    """The exchanges and queues of the run (durable, classic)."""
    connection, channel = _channel(url)
    for queue in (JOBS_QUEUE, CLAIMS, EVENTS):
        channel.queue_declare(queue, durable=True, auto_delete=False)
    channel.exchange_declare(CLAIMS, "direct", durable=True, auto_delete=False)
    channel.exchange_declare(EVENTS, "topic", durable=True, auto_delete=False)
    channel.queue_bind(CLAIMS, CLAIMS, CLAIMS)
    channel.queue_bind(EVENTS, EVENTS, "#")
    connection.close()


def fill(url: str, jobs: int) -> None:
    """``jobs`` dispatch messages in the job queue, persistent and confirmed."""
    connection, channel = _channel(url, confirm=True)
    for _ in range(jobs):
        message = amqp.Message(DISPATCH, delivery_mode=2, content_type="application/json")
        channel.basic_publish(message, "", JOBS_QUEUE)
    connection.close()


def respond(url: str, ready: Any, stop: Any) -> None:
    """Answer every claim on the address it names; ack every event."""
    connection, channel = _channel(url)
    channel.basic_qos(0, 200, False)

    def answer(message: amqp.Message) -> None:
        reply = amqp.Message(ANSWER, delivery_mode=1, content_type="application/json")
        # The claim names the pilot's reply queue in its body, as the real one does.
        channel.basic_publish(reply, "", json.loads(message.body)["reply_to"])
        channel.basic_ack(message.delivery_tag)

    channel.basic_consume(CLAIMS, callback=answer)
    channel.basic_consume(EVENTS, callback=lambda m: channel.basic_ack(m.delivery_tag))
    ready.set()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            connection.drain_events(timeout=0.2)
    connection.close()


def run_kombu(url: str, jobs: int) -> list[float]:
    """The pilot's calls today: kombu, and the project's confirming publisher."""
    from kombu import Connection, Consumer, Queue

    from broker.messaging.publisher import Outgoing, open_publisher

    connection = Connection(url, heartbeat=60)
    connection.connect()
    publisher = open_publisher(connection, 16, 30.0, USER)
    reply_queue = Queue(f"bench.reply.{uuid.uuid4().hex[:8]}", exclusive=True, durable=False)
    private = connection.channel()
    reply_queue.bind(private).declare()
    replies: list[Any] = []
    Consumer(private, queues=[reply_queue], no_ack=True, on_message=replies.append).consume()
    jobs_queue = Queue(JOBS_QUEUE, durable=True).bind(connection.channel())
    claim = Outgoing(CLAIMS, CLAIMS, _claim(reply_queue.name))
    claim_rtt: list[float] = []
    for _ in range(jobs):
        delivery = jobs_queue.get(no_ack=False)
        started = time.monotonic()
        publisher.publish([claim])
        while not replies:
            connection.drain_events(timeout=30)
        replies.pop()
        claim_rtt.append(time.monotonic() - started)
        delivery.ack()
        for _ in range(3):
            publisher.publish([Outgoing(EVENTS, "SITE.running", EVENT)])
    connection.release()
    return claim_rtt


def run_amqp(url: str, jobs: int) -> list[float]:
    """The same on py-amqp's channel directly."""
    connection, channel = _channel(url, confirm=True)
    private = connection.channel()
    reply_queue, _, _ = private.queue_declare("", exclusive=True)
    replies: list[amqp.Message] = []
    private.basic_consume(reply_queue, no_ack=True, callback=replies.append)
    claim_rtt: list[float] = []

    claim = _claim(reply_queue)

    def publish(body: bytes, exchange: str, key: str) -> None:
        message = amqp.Message(body, delivery_mode=2, content_type="application/json", user_id=USER)
        channel.basic_publish(message, exchange, key, mandatory=True)

    for _ in range(jobs):
        delivery = channel.basic_get(JOBS_QUEUE, no_ack=False)
        started = time.monotonic()
        publish(claim, CLAIMS, CLAIMS)
        while not replies:
            connection.drain_events(timeout=30)
        replies.pop()
        claim_rtt.append(time.monotonic() - started)
        channel.basic_ack(delivery.delivery_tag)
        for _ in range(3):
            publish(EVENT, EVENTS, "SITE.running")
    connection.close()
    return claim_rtt


def run_pika(url: str, jobs: int) -> list[float]:
    """The same on pika's BlockingConnection."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.confirm_delivery()
    reply_queue = channel.queue_declare("", exclusive=True).method.queue
    replies: list[bytes] = []
    channel.basic_consume(
        reply_queue, on_message_callback=lambda ch, m, p, body: replies.append(body), auto_ack=True
    )
    claim_rtt: list[float] = []

    claim = _claim(reply_queue)

    def publish(body: bytes, exchange: str, key: str) -> None:
        properties = pika.BasicProperties(
            delivery_mode=2, content_type="application/json", user_id=USER
        )
        channel.basic_publish(exchange, key, body, properties, mandatory=True)

    for _ in range(jobs):
        method, _, _ = channel.basic_get(JOBS_QUEUE, auto_ack=False)
        started = time.monotonic()
        publish(claim, CLAIMS, CLAIMS)
        while not replies:
            connection.process_data_events(time_limit=None)
        replies.pop()
        claim_rtt.append(time.monotonic() - started)
        channel.basic_ack(method.delivery_tag)
        for _ in range(3):
            publish(EVENT, EVENTS, "SITE.running")
    connection.close()
    return claim_rtt


CLIENTS: dict[str, Callable[[str, int], list[float]]] = {
    "kombu": run_kombu,
    "amqp": run_amqp,
    "pika": run_pika,
}


def _client(name: str, url: str, jobs: int, results: Any) -> None:
    cpu, wall = time.process_time(), time.monotonic()
    rtt = CLIENTS[name](url, jobs)
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    rtt.sort()
    results.put(
        {
            "client": name,
            "jobs": jobs,
            "cpu_ms_per_job": round(cpu / jobs * 1000, 3),
            "wall_ms_per_job": round(wall / jobs * 1000, 3),
            "claim_rtt_p50_ms": round(rtt[len(rtt) // 2] * 1000, 3),
            "claim_rtt_p99_ms": round(rtt[int(len(rtt) * 0.99)] * 1000, 3),
        }
    )


def one(context: Any, name: str, url: str, jobs: int) -> dict[str, Any]:
    """One client's run of ``jobs`` jobs in a process of its own."""
    fill(url, jobs)
    results = context.Queue()
    child = context.Process(target=_client, args=(name, url, jobs, results))
    child.start()
    figures: dict[str, Any] = results.get(timeout=600)
    child.join(60)
    return figures


def _rabbitmqctl(*words: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *words], check=True, capture_output=True, timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", default="kombu,amqp,pika")
    parser.add_argument("--host", default="guest:guest@127.0.0.1:5672")
    args = parser.parse_args()
    vhost = f"pilot_amqp_{uuid.uuid4().hex[:8]}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, USER, ".*", ".*", ".*")
    url = f"amqp://{args.host}/{vhost}"
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Event(), context.Event()
    responder = context.Process(target=respond, args=(url, ready, stop), daemon=True)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in args.clients.split(",")}
    try:
        declare(url)
        responder.start()
        ready.wait(60)
        for _ in range(args.rounds):
            for name, found in runs.items():
                figures = one(context, name, url, args.jobs)
                found.append(figures)
                print(json.dumps(figures), flush=True)
    finally:
        stop.set()
        responder.join(10)
        _rabbitmqctl("delete_vhost", vhost)
    summary = {
        name: {
            key: statistics.median(r[key] for r in found)
            for key in ("cpu_ms_per_job", "wall_ms_per_job", "claim_rtt_p50_ms")
        }
        for name, found in runs.items()
    }
    for name, figures in summary.items():
        print(name, figures)
    print(json.dumps({"jobs": args.jobs, "rounds": args.rounds, "median": summary}))


if __name__ == "__main__":
    sys.exit(main())
