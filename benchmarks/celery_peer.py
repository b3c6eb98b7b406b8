"""The Celery peer of the lifecycle benchmark, in the same shape.

N tasks over 4 queues on the same RabbitMQ, each task running the payload
(``/bin/sh -c true``, as a pandamq pilot does, or nothing with
``--payload none``) in a Celery worker, with Celery's SQLAlchemy result
backend on the same PostgreSQL: late acks, STARTED and SUCCESS persisted.
Jobs per second run from the first submission to the last task's
``date_done`` in SQL, as the lifecycle benchmark runs to the last job's
``finished``. Celery is not a dependency of pandamq::

    .venv/bin/pip install 'celery>=5.4'
    python benchmarks/celery_peer.py --tasks 2000 --pool prefork --concurrency 8

The broker and database URLs are pandamq's (``PANDAMQ_BROKER_URL``,
``PANDAMQ_DATABASE_URL``); the result table is emptied before each run. The
last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from celery import Celery
from kombu import Queue

QUEUES = [f"peer.site{n}" for n in range(4)]


def _database_url() -> str:
    return os.environ.get("PANDAMQ_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1/test")


app = Celery("celery_peer")
app.conf.update(
    broker_url=os.environ.get("PANDAMQ_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    result_backend="db+" + _database_url(),
    task_acks_late=True,
    task_track_started=True,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_queues=[Queue(name, routing_key=name) for name in QUEUES],
)


@app.task(name="peer.run")
def run(command: str | None) -> int:
    """The payload: ``/bin/sh -c command``, or nothing."""
    if command is None:
        return 0
    return subprocess.run(["/bin/sh", "-c", command], check=False).returncode


def _reset(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS celery_taskmeta, celery_tasksetmeta")
        conn.exec_driver_sql("DROP SEQUENCE IF EXISTS task_id_sequence, taskset_id_sequence")
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in app.conf.task_queues:
            queue.bind(channel).declare()
            queue.bind(channel).purge()


def _start_workers(pool: str, concurrency: int, workers: int) -> list[subprocess.Popen[bytes]]:
    here = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": str(here)}
    command = [sys.executable, "-m", "celery", "-A", "celery_peer", "worker", "-Q"]
    return [
        subprocess.Popen(
            [
                *command,
                ",".join(QUEUES),
                "--pool",
                pool,
                "--concurrency",
                str(concurrency),
                "--hostname",
                f"peer{n}@%h",
                "--loglevel",
                "WARNING",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            env=env,
            cwd=here,
            stdout=subprocess.DEVNULL,
        )
        for n in range(workers)
    ]


def _wait_ready(workers: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if len(app.control.ping(timeout=1.0)) >= workers:
            return
    raise SystemExit("celery_peer: the workers did not answer a ping within 60 s")


def _done(engine: sa.Engine) -> tuple[int, datetime | None]:
    with engine.connect() as conn:
        row = conn.exec_driver_sql(
            "SELECT count(*), max(date_done) FROM celery_taskmeta WHERE status = 'SUCCESS'"
        ).one()
    return int(row[0]), row[1]


def _epoch(at: datetime) -> float:
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def one_run(args: argparse.Namespace, engine: sa.Engine) -> dict[str, Any]:
    """One run: workers up, N tasks submitted, wait until SQL has every SUCCESS."""
    _reset(engine)
    workers = _start_workers(args.pool, args.concurrency, args.workers)
    try:
        _wait_ready(args.workers)
        command = None if args.payload == "none" else args.payload
        first = time.time()
        with app.producer_or_acquire() as producer:
            for n in range(args.tasks):
                run.apply_async((command,), queue=QUEUES[n % len(QUEUES)], producer=producer)
        submitted = time.time()
        deadline = time.monotonic() + args.timeout
        count, last = 0, None
        while count < args.tasks:
            if time.monotonic() > deadline:
                raise SystemExit(f"celery_peer: {count}/{args.tasks} tasks done in time")
            time.sleep(0.2)
            count, last = _done(engine)
            print(f"\r{count}/{args.tasks} tasks done", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        assert last is not None
        return {
            "tasks_per_s": round(args.tasks / (_epoch(last) - first), 1),
            "submit_per_s": round(args.tasks / (submitted - first), 1),
        }
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--payload", default="true", help="a shell command, or 'none'")
    parser.add_argument("--pool", default="prefork", choices=["prefork", "threads", "solo"])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    engine = sa.create_engine(_database_url())
    rates = []
    for n in range(args.runs):
        figures = one_run(args, engine)
        print(f"run {n + 1}: {figures}", file=sys.stderr)
        rates.append(figures["tasks_per_s"])
    print(
        json.dumps(
            {
                "peer": "celery",
                "tasks": args.tasks,
                "payload": args.payload,
                "pool": args.pool,
                "concurrency": args.concurrency,
                "workers": args.workers,
                "runs": rates,
                "tasks_per_s": statistics.median(rates),
            }
        )
    )


if __name__ == "__main__":
    main()
