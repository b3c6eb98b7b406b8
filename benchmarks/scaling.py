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
waiting), ``lock_waiting_share`` the share of samples with any. It also
notes the CPU time used by the benchmark process (submitter and virtual
pilots), by its broker processes and by the database's backends, per job
(``cpu_ms_per_job``: from ``/proc``, so on the machine of the database). It prints a
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
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

PANDAMQ = str(Path(sys.executable).parent / "pandamq")
SAMPLE_S = 0.05
WAITING = (
    "SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 60) FROM pg_stat_activity "
    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
)
#: How many of the statements seen waiting most often are named.
WAITERS_NAMED = 4


BACKENDS = "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) a process used so far; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) * TICK_S


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class Sampler:
    """Samples, in a thread, the backends of the run's database waiting for a lock, and
    the CPU time of the benchmark process, of its broker processes and of the database's
    backends (the last value seen of each process: what it used until then)."""

    def __init__(self, database_url: str, bench_pid: int) -> None:
        url = make_url(database_url).set(drivername="postgresql")
        self._dsn = url.render_as_string(hide_password=False)
        self._bench = bench_pid
        self._stop = threading.Event()
        self.samples: list[int] = []
        #: The statements seen waiting for a lock (their first 60 characters), and how often.
        self.waiters: Counter[str] = Counter()
        self.cpu: dict[tuple[str, int], float] = {}
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with psycopg.connect(self._dsn, autocommit=True) as conn:
            while not self._stop.wait(SAMPLE_S):
                waiting = [str(r[0]) for r in conn.execute(WAITING)]
                self.samples.append(len(waiting))
                self.waiters.update(waiting)
                backends = [int(r[0]) for r in conn.execute(BACKENDS)]
                self._see("bench", [self._bench])
                self._see("broker", self._brokers())
                self._see("postgres", backends)

    def _brokers(self) -> list[int]:
        found = []
        for pid in children(self._bench):
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"serve\x00broker" in command:
                found.append(pid)
        return found

    def _see(self, kind: str, pids: list[int]) -> None:
        for pid in pids:
            used = cpu_s(pid)
            if used is not None:
                self.cpu[(kind, pid)] = used

    def figures(self, jobs: int) -> dict[str, Any]:
        n = max(len(self.samples), 1)
        by_kind: dict[str, float] = {}
        for (kind, _), used in self.cpu.items():
            by_kind[kind] = by_kind.get(kind, 0.0) + used
        return {
            "lock_waiting_mean": round(sum(self.samples) / n, 3),
            "lock_waiting_share": round(sum(1 for s in self.samples if s) / n, 3),
            "lock_waiters": dict(self.waiters.most_common(WAITERS_NAMED)),
            "cpu_ms_per_job": {k: round(v * 1000 / jobs, 2) for k, v in sorted(by_kind.items())},
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
    bench = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with Sampler(os.environ["PANDAMQ_DATABASE_URL"], bench.pid) as sampler:
        out, err = bench.communicate()
    if bench.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{err[-2000:]}")
    figures: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    figures |= sampler.figures(args.jobs)
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
