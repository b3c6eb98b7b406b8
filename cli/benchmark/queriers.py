"""Submitters asking the submitter's API while a benchmark runs: each asks
``jobs`` (a page of up to 1,000 jobs) and ``job ID`` (a random job of the run)
once a second, on a Client and a connection of its own.

The submitters are threads spread over a few processes: one process each
would start fifty interpreters on two cores, and fifty threads in one process
would decode fifty 1,000-job pages a second behind one GIL, so that the
latencies measured would include the harness's own queueing.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.synchronize import Event
from typing import Any

from broker.client import Client
from broker.errors import NotFound, PandaMQError, PermanentError
from broker.settings import Settings
from cli.benchmark.measure import percentile

PAGE = 1000
#: How long the submitters get to connect before the run starts.
READY_TIMEOUT_S = 60.0
#: How long a stopped submitter process gets to send what it measured.
RESULT_TIMEOUT_S = 60.0


@dataclass
class QueryStats:
    """What a set of submitters asked and how long the answers took."""

    job_s: list[float] = field(default_factory=list)
    page_s: list[float] = field(default_factory=list)
    answered: int = 0
    failed: int = 0
    #: ``job ID`` answered "no such job" (asked before the service stored it).
    not_found: int = 0
    #: ``jobs`` pages shorter than 1,000 jobs (not in ``page_s``).
    short_pages: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, other: QueryStats) -> None:
        """Count ``other``'s queries in too."""
        self.job_s += other.job_s
        self.page_s += other.page_s
        self.answered += other.answered
        self.failed += other.failed
        self.not_found += other.not_found
        self.short_pages += other.short_pages
        self.errors += other.errors[: 5 - len(self.errors)]

    def figures(self, elapsed_s: float) -> dict[str, Any]:
        """The figures of ``docs/performance.md``."""
        return {
            "queries_answered": self.answered,
            "queries_failed": self.failed,
            "queries_per_s": round((self.answered + self.failed) / max(elapsed_s, 1e-9), 1),
            "job_not_found": self.not_found,
            "job_answer_p50_ms": _ms(percentile(self.job_s, 50)),
            "job_answer_p99_ms": _ms(percentile(self.job_s, 99)),
            "page_1000_p50_ms": _ms(percentile(self.page_s, 50)),
            "page_1000_p99_ms": _ms(percentile(self.page_s, 99)),
            "short_pages": self.short_pages,
            "query_errors": self.errors,
        }


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


class Submitter:
    """One submitter: ``jobs`` and ``job ID`` once a second until stopped."""

    def __init__(self, settings: Settings, job_ids: Sequence[str], stop: Event) -> None:
        self._settings = settings
        self._job_ids = job_ids
        self._stop = stop
        self.stats = QueryStats()

    def run(self, ready: threading.Barrier) -> None:
        """Connect, wait for the others, then ask until stopped."""
        with Client(self._settings) as client:
            self._ask(lambda: client.jobs(limit=1), None)
            ready.wait()
            self.stats = QueryStats()
            tick = time.monotonic() + random.random()
            while not self._stop.wait(max(0.0, tick - time.monotonic())):
                self._ask(lambda: client.jobs(limit=PAGE), self.stats.page_s)
                job = partial(client.job, random.choice(self._job_ids))
                self._ask(job, self.stats.job_s)
                tick = max(tick + 1.0, time.monotonic())

    def _ask(self, query: Callable[[], Any], latencies: list[float] | None) -> None:
        started = time.monotonic()
        try:
            answer = query()
        except NotFound:
            self.stats.answered += 1
            self.stats.not_found += 1
            return
        except (PandaMQError, OSError) as exc:
            self.stats.failed += 1
            self.stats.errors = [*self.stats.errors, str(exc)][:5]
            return
        took = time.monotonic() - started
        self.stats.answered += 1
        if latencies is self.stats.page_s and len(answer.jobs) < PAGE:
            self.stats.short_pages += 1
        elif latencies is not None:
            latencies.append(took)


def _process_main(
    settings: Settings,
    job_ids: Sequence[str],
    threads: int,
    ready: Any,
    stop: Event,
    results: Any,
) -> None:
    """A submitter process: ``threads`` submitters, their stats put on ``results``."""
    submitters = [Submitter(settings, job_ids, stop) for _ in range(threads)]
    barrier = threading.Barrier(threads + 1)
    workers = [
        threading.Thread(target=s.run, args=(barrier,), name=f"submitter-{n}", daemon=True)
        for n, s in enumerate(submitters)
    ]
    for worker in workers:
        worker.start()
    barrier.wait(READY_TIMEOUT_S)
    ready.release()
    for worker in workers:
        worker.join()
    total = QueryStats()
    for submitter in submitters:
        total.add(submitter.stats)
    results.put(total)


@contextmanager
def querying(
    settings: Settings, job_ids: Sequence[str], queriers: int, processes: int
) -> Iterator[QueryStats]:
    """``queriers`` submitters over ``processes`` processes, asking from when they are
    all connected until the block ends; the stats are filled in then."""
    stats = QueryStats()
    if queriers <= 0:
        yield stats
        return
    context = multiprocessing.get_context("spawn")
    ready, stop, results = context.Semaphore(0), context.Event(), context.Queue()
    shares = [queriers // processes + (n < queriers % processes) for n in range(processes)]
    children = [
        context.Process(
            target=_process_main,
            args=(settings, list(job_ids), share, ready, stop, results),
            name=f"queriers-{n}",
            daemon=True,
        )
        for n, share in enumerate(shares)
        if share
    ]
    for child in children:
        child.start()
    try:
        _wait_ready(ready, children)
        yield stats
    finally:
        stop.set()
        _collect(stats, results, children)


def _wait_ready(ready: Any, children: Sequence[multiprocessing.process.BaseProcess]) -> None:
    for child in children:
        if not ready.acquire(timeout=READY_TIMEOUT_S):
            raise PermanentError(
                f"submitter process {child.name} did not connect within {READY_TIMEOUT_S:g} s"
            )


def _collect(
    stats: QueryStats, results: Any, children: Sequence[multiprocessing.process.BaseProcess]
) -> None:
    for _ in children:
        stats.add(results.get(timeout=RESULT_TIMEOUT_S))
    for child in children:
        child.join(RESULT_TIMEOUT_S)
