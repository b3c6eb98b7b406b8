"""The first page, and a page deep in the cursor chain, of a user with many jobs:
``jobs(limit=1000)`` asked through the submitter's API, and the plan PostgreSQL
chooses for the page's query.

The jobs are seeded finished, a millisecond apart, with an owner of their own;
the benchmark's identity asks for them with the production role (the brokers
of this mode get it), which runs the same statement as the owner asking for
their own jobs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from broker.api import JobPage
from broker.client import Client
from broker.errors import PermanentError
from broker.security import identity
from broker.settings import Settings
from broker.store import job_pages
from cli.benchmark.measure import percentile

PAGE = 1000
Progress = Callable[[int, int], None]


def environment(settings: Settings) -> dict[str, str]:
    """What the brokers of this mode need: the benchmark's identity with the production role."""
    roles = [settings.production_role, identity.of(settings)]
    return {"PANDAMQ_PRODUCTION_ROLE": ",".join(r for r in roles if r)}


def measure_pages(
    settings: Settings,
    engine: Engine,
    owner: str,
    deep_page: int,
    tries: int,
    work_dir: Path,
    on_progress: Progress,
) -> dict[str, Any]:
    """Walk to page ``deep_page`` once, then time the first and that page ``tries`` times."""
    total = deep_page + 2 * tries
    with Client(settings) as client:
        walk, cursor = _walk(client, owner, deep_page, on_progress, total)
        first: list[float] = []
        deep: list[float] = []
        for n in range(tries):
            first.append(_timed(lambda: client.jobs(owner=owner, limit=PAGE)))
            deep.append(_timed(lambda: client.jobs(owner=owner, limit=PAGE, cursor=cursor)))
            on_progress(deep_page + 2 * (n + 1), total)
    return {
        "mode": "pages",
        "deep_page": deep_page,
        "tries": tries,
        "walk_page_mean_ms": _ms(sum(walk) / len(walk)),
        "first_page_p50_ms": _ms(percentile(first, 50)),
        "first_page_p99_ms": _ms(percentile(first, 99)),
        "deep_page_p50_ms": _ms(percentile(deep, 50)),
        "deep_page_p99_ms": _ms(percentile(deep, 99)),
        "plans_file": str(explain(engine, owner, cursor, work_dir / "page-plans.txt")),
    }


def _walk(
    client: Client, owner: str, deep_page: int, on_progress: Progress, total: int
) -> tuple[list[float], str]:
    """Seconds each page took on the way, and the cursor of page ``deep_page``."""
    cursor, took = "", []
    for n in range(1, deep_page):
        started = time.monotonic()
        page = client.jobs(owner=owner, limit=PAGE, cursor=cursor)
        took.append(time.monotonic() - started)
        if not page.cursor or len(page.jobs) < PAGE:
            raise PermanentError(f"{owner} has no page {deep_page} (page {n} is the last)")
        cursor = page.cursor
        on_progress(n, total)
    return took or [0.0], cursor


def _timed(ask: Callable[[], JobPage]) -> float:
    started = time.monotonic()
    page = ask()
    if len(page.jobs) != PAGE:
        raise PermanentError(f"a page of {len(page.jobs)} jobs, not {PAGE}")
    return time.monotonic() - started


def explain(engine: Engine, owner: str, cursor: str, path: Path) -> Path:
    """``EXPLAIN (ANALYZE, BUFFERS)`` of the first and the deep page's query, into ``path``."""
    if engine.dialect.name != "postgresql":
        path.write_text("EXPLAIN ANALYZE is shown on PostgreSQL only\n")
        return path
    wanted = job_pages.JobFilter(owner=owner)
    parts = []
    with engine.connect() as conn:
        for name, after in (("first page", ""), ("deep page", cursor)):
            compiled = job_pages.statement(wanted, after, PAGE).compile(dialect=engine.dialect)
            sql = f"EXPLAIN (ANALYZE, BUFFERS) {compiled}"
            lines = conn.exec_driver_sql(sql, compiled.params).scalars().all()
            parts.append(f"-- {name}\n{compiled}\n\n" + "\n".join(lines) + "\n")
    path.write_text("\n".join(parts))
    return path


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)
