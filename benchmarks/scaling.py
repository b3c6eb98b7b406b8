"""One, two and three broker processes in one invocation, alternating::

    python benchmarks/scaling.py --jobs 10000 --order 1,2,3,3,2,1

Each run is ``pandamq bench --mode capacity --brokers N`` (or ``--mode`` another
mode) on the configured RabbitMQ and database (``PANDAMQ_*``), one after the
other in the order given, so that a drift of the machine's speed (other
processes on it) falls on every count alike. Beside each run's figures it
notes the machine's load average before and after, and samples PostgreSQL
every 50 ms for the backends of the run's database that wait for a lock
(``pg_stat_activity.wait_event_type = 'Lock'``): ``lock_waiting_mean`` is
their mean number (so 0.3 is three tenths of one backend's time spent
waiting), ``lock_waiting_share`` the share of samples with any. It prints a
line of JSON per run, then every count's runs and median, and a last line of
JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

PANDAMQ = str(Path(sys.executable).parent / "pandamq")
SAMPLE_S = 0.05
WAITING = (
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
)


class LockSampler:
    """Counts, in a thread, the backends of the database waiting for a lock."""

    def __init__(self, database_url: str) -> None:
        url = make_url(database_url).set(drivername="postgresql")
        self._dsn = url.render_as_string(hide_password=False)
        self._stop = threading.Event()
        self.samples: list[int] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LockSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with psycopg.connect(self._dsn, autocommit=True) as conn:
            while not self._stop.wait(SAMPLE_S):
                row = conn.execute(WAITING).fetchone()
                self.samples.append(int(row[0]) if row else 0)

    def figures(self) -> dict[str, float]:
        n = max(len(self.samples), 1)
        return {
            "lock_waiting_mean": round(sum(self.samples) / n, 3),
            "lock_waiting_share": round(sum(1 for s in self.samples if s) / n, 3),
        }


def load() -> float:
    """The machine's 1-minute load average."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def run(args: argparse.Namespace, brokers: int) -> dict[str, Any]:
    command = [
        PANDAMQ,
        "bench",
        "--mode",
        args.mode,
        "--jobs",
        str(args.jobs),
        "--brokers",
        str(brokers),
        "--sites",
        str(args.sites),
        *(["--pilots-per-site", str(args.pilots_per_site)] if args.mode == "full" else []),
    ]
    before = load()
    with LockSampler(os.environ["PANDAMQ_DATABASE_URL"]) as sampler:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    figures |= sampler.figures()
    figures |= {"load_before": before, "load_after": load()}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--mode", default="capacity")
    parser.add_argument("--pilots-per-site", type=int, default=2)
    parser.add_argument("--order", default="1,2,3,3,2,1", help="broker counts, in run order")
    parser.add_argument("--key", default="jobs_per_s", help="the figure summarised")
    args = parser.parse_args()
    results: dict[int, list[dict[str, Any]]] = {}
    for brokers in (int(n) for n in args.order.split(",")):
        figures = run(args, brokers)
        print(json.dumps(figures), flush=True)
        results.setdefault(brokers, []).append(figures)
    summary = {}
    for brokers, found in sorted(results.items()):
        values = [f[args.key] for f in found]
        summary[brokers] = {"runs": values, "median": statistics.median(values)}
        print(f"{brokers} broker(s): {args.key} {values}, median {statistics.median(values)}")
    print(json.dumps({"mode": args.mode, "jobs": args.jobs, args.key: summary}))


if __name__ == "__main__":
    main()
