"""pandamq and its Celery peer side by side in one invocation, each figure on a
brand-new database and vhost, so that no figure is taken from another day::

    .venv/bin/pip install 'celery>=5.4'
    python benchmarks/compare.py --runs 3            # add --million for the 1,000,000-job figure

Each run measures, in this order, on a database created for the figure (then
``pandamq db upgrade``, as an operator's install does) and a vhost of its own:

- ``capacity_new``: ``pandamq bench --mode capacity`` on the new database;
- ``capacity_old``: the same after 10,000 finished jobs went in (``--old-jobs``);
- ``capacity_million``: the same after 1,000,000 (with ``--million``);
- ``celery_noop``: the Celery peer, no-op tasks (prefork, concurrency 4);
- ``full``: ``pandamq bench --mode full``, 8 real pilots running ``true``;
- ``celery_true``: the Celery peer running ``true`` (prefork, concurrency 8);
- ``half_rate``: capacity submitted at half of this run's ``capacity_new``, for
  the dispatch latency.

It prints every figure's runs, median, min and max; each target's ratio in
every run (the figures of one run share the machine's speed of the moment,
which drifts within an invocation) and their median against the target of
docs/performance.md; and a last line of JSON. The
administrative URLs (to create and drop databases and vhosts) come from
``--postgres`` and ``--rabbitmq``; vhosts are made with ``rabbitmqctl``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

HERE = Path(__file__).resolve().parent
PANDAMQ = str(Path(sys.executable).parent / "pandamq")


@dataclass(frozen=True)
class Figure:
    """One measured figure: how to run it and which number of its JSON it keeps."""

    name: str
    what: str
    command: Callable[[argparse.Namespace, dict[str, float]], list[str]]
    key: str


def _bench(mode: str, jobs: int, *extra: str) -> list[str]:
    return [PANDAMQ, "bench", "--mode", mode, "--jobs", str(jobs), *extra]


def _peer(tasks: int, payload: str, concurrency: int) -> list[str]:
    return [
        sys.executable,
        str(HERE / "celery_peer.py"),
        "--tasks",
        str(tasks),
        "--payload",
        payload,
        "--pool",
        "prefork",
        "--concurrency",
        str(concurrency),
    ]


FIGURES = [
    Figure(
        "capacity_new",
        "capacity, brand-new database: jobs/s",
        lambda a, _: _bench("capacity", a.capacity_jobs),
        "jobs_per_s",
    ),
    Figure(
        "capacity_old",
        "capacity, database with old jobs: jobs/s",
        lambda a, _: _bench("capacity", a.capacity_jobs, "--old-jobs", str(a.old_jobs)),
        "jobs_per_s",
    ),
    Figure(
        "capacity_million",
        "capacity, database with 1,000,000 finished jobs: jobs/s",
        lambda a, _: _bench("capacity", a.capacity_jobs, "--old-jobs", "1000000"),
        "jobs_per_s",
    ),
    Figure(
        "celery_noop",
        "Celery, no-op tasks (prefork 4): tasks/s",
        lambda a, _: _peer(a.capacity_jobs, "none", 4),
        "tasks_per_s",
    ),
    Figure(
        "full",
        "full life, 8 pilots running `true`: jobs/s",
        lambda a, _: _bench("full", a.full_jobs, "--sites", "4", "--pilots-per-site", "2"),
        "jobs_per_s",
    ),
    Figure(
        "celery_true",
        "Celery, `true` (prefork 8): tasks/s",
        lambda a, _: _peer(a.full_jobs, "true", 8),
        "tasks_per_s",
    ),
    Figure(
        "half_rate",
        "dispatch p99 at half of capacity: ms",
        lambda a, run: _bench(
            "capacity", a.capacity_jobs, "--rate", str(round(run["capacity_new"] / 2, 1))
        ),
        "dispatch_p99_ms",
    ),
]

#: (what, numerator, denominator, target, "at least" or "at most")
TARGETS = [
    ("capacity new / old database", "capacity_new", "capacity_old", 0.85, "at least"),
    ("capacity new database / Celery no-op", "capacity_new", "celery_noop", 3.0, "at least"),
    ("capacity old database / Celery no-op", "capacity_old", "celery_noop", 3.0, "at least"),
    ("capacity 1,000,000 jobs / new database", "capacity_million", "capacity_new", 0.9, "at least"),
    ("full life / Celery `true`", "full", "celery_true", 2.0, "at least"),
    ("dispatch p99 at half of capacity (ms)", "half_rate", None, 50.0, "at most"),
]


@contextmanager
def _fresh(args: argparse.Namespace) -> Iterator[dict[str, str]]:
    """A new database (upgraded) and vhost; the environment that points at them."""
    tag = uuid.uuid4().hex[:8]
    database, vhost = f"pandamq_compare_{tag}", f"pandamq-compare-{tag}"
    with psycopg.connect(args.postgres, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    _rabbitmqctl("add_vhost", vhost)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, args.rabbitmq_user, ".*", ".*", ".*")
        host = args.postgres.split("@", 1)[1].rsplit("/", 1)[0]
        user = args.postgres.split("//", 1)[1].split("@", 1)[0]
        env = {
            **os.environ,
            "PANDAMQ_DATABASE_URL": f"postgresql+psycopg://{user}@{host}/{database}",
            "PANDAMQ_BROKER_URL": f"{args.rabbitmq.rstrip('/')}/{vhost}",
        }
        subprocess.run([PANDAMQ, "db", "upgrade"], env=env, check=True, capture_output=True)
        yield env
    finally:
        _rabbitmqctl("delete_vhost", vhost)
        with psycopg.connect(args.postgres, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _rabbitmqctl(*words: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *words], check=True, capture_output=True, timeout=60)


def _measure(figure: Figure, args: argparse.Namespace, run: dict[str, float]) -> dict[str, Any]:
    """Run one figure on a fresh database and vhost; its JSON (the command's last line)."""
    with _fresh(args) as env:
        done = subprocess.run(
            figure.command(args, run), env=env, stdout=subprocess.PIPE, text=True, check=False
        )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise SystemExit(f"compare: {figure.name} failed (exit {done.returncode}): see above")
    return dict(json.loads(lines[-1]))


def _summary(values: list[float]) -> dict[str, Any]:
    return {
        "runs": values,
        "median": round(statistics.median(values), 1),
        "min": min(values),
        "max": max(values),
    }


def _verdicts(runs: list[dict[str, float]]) -> list[dict[str, Any]]:
    """Each target's ratio in every run (figures of one run share the machine's speed of
    the moment, which drifts within an invocation), their median, and whether it is met."""
    verdicts = []
    for what, top, bottom, target, sense in TARGETS:
        values = [
            round(run[top] / run[bottom], 3) if bottom else run[top]
            for run in runs
            if top in run and (bottom is None or bottom in run)
        ]
        if not values:
            continue
        value = statistics.median(values)
        met = value >= target if sense == "at least" else value <= target
        verdicts.append(
            {
                "what": what,
                "value": round(value, 3),
                "runs": values,
                "target": f"{sense} {target}",
                "met": met,
            }
        )
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--capacity-jobs", type=int, default=5000)
    parser.add_argument("--full-jobs", type=int, default=2000)
    parser.add_argument("--old-jobs", type=int, default=10_000)
    parser.add_argument("--million", action="store_true", help="measure capacity_million too")
    parser.add_argument(
        "--only", default="", help="comma-separated figure names (default: all of them)"
    )
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rabbitmq", default="amqp://guest:guest@127.0.0.1:5672")
    parser.add_argument("--rabbitmq-user", default="guest")
    args = parser.parse_args()
    try:
        import celery  # noqa: F401
    except ImportError:
        raise SystemExit("compare: Celery is missing: pip install 'celery>=5.4'") from None
    wanted = set(filter(None, args.only.split(","))) or {f.name for f in FIGURES}
    if not args.million:
        wanted.discard("capacity_million")
    if "half_rate" in wanted:
        wanted.add("capacity_new")
    figures = [f for f in FIGURES if f.name in wanted]
    values: dict[str, list[float]] = {f.name: [] for f in figures}
    runs: list[dict[str, float]] = []
    started = time.monotonic()
    for n in range(args.runs):
        run: dict[str, float] = {}
        runs.append(run)
        for figure in figures:
            print(f"run {n + 1}/{args.runs}: {figure.name}", file=sys.stderr, flush=True)
            run[figure.name] = float(_measure(figure, args, run)[figure.key])
            values[figure.name].append(run[figure.name])
        print(f"run {n + 1}: {run}", file=sys.stderr, flush=True)
    summary = {name: _summary(v) for name, v in values.items()}
    verdicts = _verdicts(runs)
    for figure in figures:
        s = summary[figure.name]
        print(f"{figure.what:58} median {s['median']:8} min {s['min']:8} max {s['max']:8}")
    for v in verdicts:
        verdict = "met" if v["met"] else "MISSED"
        print(f"{v['what']:58} median {v['value']:8} runs {v['runs']} ({v['target']}: {verdict})")
    print(
        json.dumps(
            {
                "runs": args.runs,
                "capacity_jobs": args.capacity_jobs,
                "full_jobs": args.full_jobs,
                "old_jobs": args.old_jobs,
                "elapsed_s": round(time.monotonic() - started, 1),
                "figures": summary,
                "targets": verdicts,
            }
        )
    )


if __name__ == "__main__":
    main()
