"""The bulk mode of the lifecycle benchmark: one task of N files, split into N
jobs, persisted and brokered; how long from its submission until every job
has a site."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, func, select

from broker.errors import PermanentError
from broker.protocol import TaskSpec
from broker.settings import Settings
from broker.store.clock import now
from broker.store.datasets import FileRecord, register
from broker.store.engine import transaction
from broker.store.schema import jobs
from cli.benchmark.submissions import publish_task

Progress = Callable[[int, int], None]


def measure_bulk(
    settings: Settings,
    engine: Engine,
    sites: list[str],
    files: int,
    timeout_s: float,
    on_progress: Progress,
) -> dict[str, Any]:
    """Register ``files`` input files over ``sites`` (not timed), submit one task over
    them, and time its split, persistence and brokerage."""
    tag = uuid.uuid4().hex[:8]
    dataset = _input_dataset(engine, sites, files, tag)
    # Brokered over this run's sites only: earlier runs' sites stay in the catalogue.
    task = TaskSpec(
        "true {inputs}",
        dataset,
        f"bench.{tag}.out",
        id=f"bench-{tag}",
        files_per_job=1,
        sites=sites,
    )
    started = time.monotonic()
    publish_task(settings, task)
    _wait_brokered(engine, task.id, files, started + timeout_s, on_progress)
    elapsed = time.monotonic() - started
    return {
        "mode": "bulk",
        "jobs": files,
        "sites": len(sites),
        "split_and_brokered_s": round(elapsed, 2),
        "jobs_per_s": round(files / elapsed, 1),
    }


def _input_dataset(engine: Engine, sites: list[str], files: int, tag: str) -> str:
    """A dataset of ``files`` files, each with a replica at one of ``sites`` in turn."""
    name = f"bench.{tag}.in"
    t = now()
    with transaction(engine) as conn:
        for n, site in enumerate(sites):
            placed = [
                (FileRecord("bench", f"{tag}.{i:07d}", uuid.uuid4().hex, 1, "00020001"), "-")
                for i in range(n, files, len(sites))
            ]
            register(conn, name, placed, site, t)
    return name


def _wait_brokered(
    engine: Engine, task_id: str, files: int, deadline: float, on_progress: Progress
) -> None:
    """Until every job of the task has left ``defined`` for a site."""
    stmt = select(func.count()).where(jobs.c.task_id == task_id, jobs.c.site.is_not(None))
    while True:
        with transaction(engine) as conn:
            done = conn.execute(stmt).scalar_one()
        on_progress(done, files)
        if done >= files:
            return
        if time.monotonic() > deadline:
            raise PermanentError(f"benchmark stopped: {done}/{files} jobs brokered in time")
        time.sleep(0.1)
