"""Time the web monitor's pages on a PostgreSQL database of a million jobs.

Seeds a new database (dropped at the end unless --keep) with --jobs job rows
(most of them final over the last 30 days, a few percent active, as on a
busy grid), their attempts, two history rows each, pilots and tasks; then
asks each monitor page --repeat times through the WSGI app and prints the
median and worst time, and the plan of every statement a page runs (EXPLAIN
ANALYZE), so a full scan of jobs shows.

    .venv/bin/python benchmarks/monitor_pages.py --jobs 1000000
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from sqlalchemy import Engine, event, text

from broker.monitor.web import MonitorApp, monitor_server
from broker.observability.gauges import SQLGauges
from broker.store.engine import open_engine
from broker.store.migrate import upgrade

SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
SITES = 20
TASKS = 1000

SEED = [
    # Sites, tasks, then jobs: 3 % active, the rest final over 30 days (12 % of those failed).
    "INSERT INTO sites (name, status, created_at) "
    "SELECT 'SITE_' || s, 'online', now() FROM generate_series(1, :sites) s",
    "INSERT INTO tasks (id, name, status, created_at) "
    "SELECT 'task-' || t, 'task ' || t, 'running', now() FROM generate_series(1, :tasks) t",
    """
    INSERT INTO jobs (id, task_id, name, site, resource_type, state, attempt, priority,
                      max_attempts, spec, pilot_id, exit_code, error_family, error_code,
                      diagnostic, created_at, modified_at, heartbeat_at)
    SELECT 'job-' || i, 'task-' || (i % :tasks + 1), 'job ' || i, 'SITE_' || (i % :sites + 1),
           CASE WHEN i % 10 = 0 THEN 'MCORE' ELSE 'SCORE' END,
           st, 1, 0, 3, json_build_object('command', 'true', 'id', 'job-' || i),
           CASE WHEN st IN ('sent', 'starting', 'running', 'finished', 'failed')
                THEN 'pilot-' || (i % 5000) END,
           CASE WHEN st = 'failed' THEN i % 5 + 1 WHEN st = 'finished' THEN 0 END,
           CASE WHEN st = 'failed' THEN 'pilot' END,
           CASE WHEN st = 'failed' THEN 1305 END,
           CASE WHEN st = 'failed' THEN 'payload exit ' || (i % 5 + 1) END,
           t - interval '1 hour', t, CASE WHEN st = 'running' THEN t END
    FROM (
        SELECT i,
               CASE WHEN i / :sites % 100 < 2 THEN 'running'
                    WHEN i / :sites % 100 = 2 THEN 'activated'
                    WHEN i / :sites % 100 < 15 THEN 'failed'
                    ELSE 'finished' END AS st,
               CASE WHEN i / :sites % 100 < 3 THEN now() - (i % 3600) * interval '1 second'
                    ELSE now() - (i % 2592000) * interval '1 second' END AS t
        FROM generate_series(1, :jobs) i
    ) j
    """,
    """
    INSERT INTO job_attempts (job_id, attempt, site, pilot_id, state, created_at, started_at,
                              ended_at, exit_code, error_family, error_code, diagnostic)
    SELECT id, 1, site, pilot_id, state, created_at, created_at,
           CASE WHEN state IN ('finished', 'failed') THEN modified_at END,
           exit_code, error_family, error_code, diagnostic
    FROM jobs
    """,
    """
    INSERT INTO job_transitions (job_id, attempt, from_state, to_state, at, reason)
    SELECT id, 1, NULL, 'defined', created_at, 'submitted' FROM jobs
    UNION ALL
    SELECT id, 1, 'holding', state, modified_at, 'reported by pilot' FROM jobs
    """,
    # 100,000 datasets of two files each, with a replica of each file.
    """
    INSERT INTO datasets (name, kind, state, task_id, site, created_at, modified_at)
    SELECT 'ds-' || d, (ARRAY['input', 'dispatch', 'output', 'log'])[d % 4 + 1],
           CASE WHEN d % 3 = 0 THEN 'closed' ELSE 'open' END, 'task-' || (d % :tasks + 1),
           'SITE_' || (d % :sites + 1), now() - interval '30 days',
           now() - (d % 2592000) * interval '1 second'
    FROM generate_series(1, 100000) d
    """,
    """
    INSERT INTO files (id, scope, name, guid, size, adler32, created_at)
    SELECT f, 'data', 'file-' || f || '.root', md5(f::text)::uuid::text, 1000000 + f,
           '0000abcd', now()
    FROM generate_series(1, 200000) f
    """,
    "INSERT INTO dataset_contents (dataset, file_id, position, added_at) "
    "SELECT 'ds-' || ((f + 1) / 2), f, f % 2, now() FROM generate_series(1, 200000) f",
    "INSERT INTO replicas (file_id, site, path, state, created_at, modified_at) "
    "SELECT f, 'SITE_' || (((f + 1) / 2) % :sites + 1), '/se/file-' || f, 'available', now(), "
    "now() FROM generate_series(1, 200000) f",
    """
    INSERT INTO pilots (id, site, node, cores, memory_mb, first_seen, last_seen, jobs_claimed)
    SELECT 'pilot-' || p, 'SITE_' || (p % :sites + 1), 'node' || p, 8, 16000,
           now() - interval '1 day', now() - (p % 20000) * interval '1 second', 100
    FROM generate_series(0, 4999) p
    """,
]

PAGES = [
    "/",
    "/api/",
    "/errors",
    "/errors?site=SITE_7",
    "/jobs?state=running&site=SITE_3",
    "/jobs?state=finished&site=SITE_3",
    "/jobs?state=failed&task=task-42",
    "/jobs/job-123457",
    "/tasks/task-42",
    "/datasets",
    "/datasets?kind=output",
    "/datasets/ds-12345",
]


@contextmanager
def database(keep: bool) -> Iterator[str]:
    """A new, empty PostgreSQL database; dropped afterwards unless ``keep``."""
    name = f"pandamq_bench_{uuid.uuid4().hex[:8]}"
    admin = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{SERVER}/{name}"
    finally:
        if not keep:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        else:
            print(f"kept database {name}")


def seed(engine: Engine, jobs: int) -> None:
    """Fill the database and analyse it, as autovacuum would have."""
    started = time.perf_counter()
    with engine.begin() as conn:
        for statement in SEED:
            conn.execute(text(statement), {"jobs": jobs, "sites": SITES, "tasks": TASKS})
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
    print(f"seeded {jobs} jobs in {time.perf_counter() - started:.0f} s")


def ask(app: MonitorApp, path: str) -> tuple[str, int]:
    """One request through the WSGI app: (status, body size)."""
    route, _, query = path.partition("?")
    answer: dict[str, Any] = {}
    body = b"".join(
        app(
            {"PATH_INFO": route, "QUERY_STRING": query, "REQUEST_METHOD": "GET"},
            lambda status, _headers: answer.setdefault("status", status),
        )
    )
    return answer["status"], len(body)


def time_pages(engine: Engine, repeat: int) -> None:
    """Median and worst milliseconds per page."""
    app = MonitorApp(engine)
    print(f"{'page':40} {'status':8} {'median ms':>10} {'max ms':>8}")
    for path in PAGES:
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            status, _size = ask(app, path)
            times.append((time.perf_counter() - started) * 1000)
        print(f"{path:40} {status[:3]:8} {statistics.median(times):10.1f} {max(times):8.1f}")


def time_gauges(engine: Engine, repeat: int) -> None:
    """Milliseconds to read the SQL gauges of one /metrics scrape."""
    gauges = SQLGauges(engine, refresh_s=0.0, pilot_seen_s=10800.0)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        list(gauges.collect())
        times.append((time.perf_counter() - started) * 1000)
    print(f"{'/metrics SQL gauges':40} {'':8} {statistics.median(times):10.1f} {max(times):8.1f}")


def explain(engine: Engine) -> None:
    """EXPLAIN ANALYZE of every statement each page runs."""
    statements: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    app = MonitorApp(engine)
    event.listen(engine, "before_cursor_execute", record)
    for path in PAGES:
        ask(app, path)
    list(SQLGauges(engine, refresh_s=0.0, pilot_seen_s=10800.0).collect())
    event.remove(engine, "before_cursor_execute", record)
    with engine.connect() as conn:
        for statement, parameters in statements:
            plan = conn.exec_driver_sql("EXPLAIN (ANALYZE, COSTS OFF) " + statement, parameters)
            print("\n" + " ".join(statement.split())[:160])
            for (line,) in plan:
                print("   ", line)


def screenshot(engine: Engine, path: str) -> None:
    """A PNG of the sites page as headless chromium shows it (the README's picture)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    server = monitor_server(engine, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True).start()
    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--window-size=1500,1100"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(f"http://127.0.0.1:{server.server_address[1]}/")
        driver.save_screenshot(path)
    finally:
        driver.quit()
        server.shutdown()
    print(f"screenshot of the sites page in {path}")


def main() -> None:
    """Seed, time, explain."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--explain", action="store_true", help="print the plans too")
    parser.add_argument("--screenshot", metavar="PNG", help="save a picture of the sites page")
    args = parser.parse_args()
    with database(args.keep) as url:
        engine = open_engine(url)
        upgrade(engine)
        seed(engine, args.jobs)
        time_pages(engine, args.repeat)
        time_gauges(engine, args.repeat)
        if args.explain:
            explain(engine)
        if args.screenshot:
            screenshot(engine, args.screenshot)
        engine.dispose()


if __name__ == "__main__":
    main()
