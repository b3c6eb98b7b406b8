"""EXPLAIN (ANALYZE, BUFFERS) every statement of the broker's hot path, on a
database in the states where plans used to flip::

    PYTHONPATH=. python benchmarks/plans.py --postgres postgresql://postgres@127.0.0.1/postgres

Each state gets a database of its own (dropped after), made as an install
makes it (``pandamq db upgrade``), and a backlog as a capacity run leaves it
mid-way: per site 20 jobs in each of ``activated``, ``sent``, ``starting`` and
``running``, and the rest of ``--backlog`` jobs ``throttled``. The states:

- ``new``: the backlog grown after the upgrade, never analysed since (the
  statistics are the empty tables' that the upgrade took);
- ``old-N``: N finished jobs with their history (as ``pandamq bench
  --old-jobs``), then the backlog, then ``VACUUM ANALYZE``.

Then each step of the hot path runs once, as the broker runs it, in a
transaction rolled back afterwards (so every step sees the same backlog):
a claim batch's compare-and-set, the release of throttled jobs after it, a
batch of events to the end of the jobs' life (with the endings), heartbeats,
the lock of a batch of jobs, and a submission batch. Every statement a step
sends is run first under ``EXPLAIN (ANALYZE, BUFFERS)`` in a savepoint rolled
back, with the same parameters. The report gives each statement's scans (with
their indexes), rows and the buffers it touched: a figure that does not depend
on the machine's load, unlike the milliseconds beside it.

The code run is the tree this script is run from (``PYTHONPATH``), so the
same script shows a commit before and after a change.
"""

from __future__ import annotations

import argparse
import json
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, event, text

from broker.operations import activation
from broker.operations.brokerage import Brokerage
from broker.operations.intake import store_jobs
from broker.operations.throttle import Limits
from broker.protocol import JobEvent, JobSpec
from broker.service import events
from broker.settings import Settings
from broker.states import JobState
from broker.store import endings, transitions
from broker.store.clock import now
from broker.store.engine import open_engine, transaction
from broker.store.jobs import load
from broker.store.migrate import upgrade
from broker.store.sites import add_site
from broker.store.transitions import Change
from cli.benchmark.seed import seed_old_jobs

S = JobState
SITES = 4
#: Jobs per site in each state a pilot's claim and events move through.
PER_STATE = 20
LIVE = (S.ACTIVATED, S.SENT, S.STARTING, S.RUNNING)

BACKLOG = """
INSERT INTO jobs (id, name, site, resource_type, state, attempt, priority, max_attempts,
                  spec, owner, activity, created_at, modified_at, base_priority)
SELECT :tag || '-' || i, 'job ' || i, :site, 'SCORE', :state, 1, 0, 3,
       json_build_object('command', 'true', 'id', :tag || '-' || i, 'cores', 1,
                         'memory_mb', 2000, 'walltime_s', 3600),
       'bench', 'production', now(), now(), 0
FROM generate_series(1, :n) i;
INSERT INTO job_attempts (job_id, attempt, site, state, created_at)
SELECT id, 1, site, state, created_at FROM jobs WHERE site = :site AND state = :state;
INSERT INTO job_transitions (job_id, attempt, from_state, to_state, at, reason)
SELECT id, 1, NULL, state, created_at, 'backlog' FROM jobs WHERE site = :site AND state = :state
"""


@dataclass
class Explained:
    """One statement as a step ran it: its text, scans, rows and buffers."""

    step: str
    sql: str
    scans: list[str]
    rows: int
    buffers: int
    ms: float


@dataclass
class Capture:
    """Statements explained so far, and the step they belong to."""

    step: str = ""
    found: list[Explained] = field(default_factory=list)


def _scans(plan: dict[str, Any]) -> Iterator[str]:
    kind = plan["Node Type"]
    if "Index Name" in plan:
        kind += f" {plan['Index Name']}"
    elif "Relation Name" in plan:
        kind += f" {plan['Relation Name']}"
    elif "Function Name" in plan:
        kind += f" {plan['Function Name']}"
    if (
        kind.split()[0] in ("Seq", "Index", "Bitmap", "Function")
        or "Join" in kind
        or "Nested" in kind
    ):
        yield f"{kind} ({plan.get('Actual Rows', 0)})"
    for child in plan.get("Plans", ()):
        yield from _scans(child)


def _short(sql: str) -> str:
    sql = re.sub(r"%\(\w+\)s(::[\w\[\]()]+)?", "?", " ".join(sql.split()))
    sql = re.sub(r"(\?, )+\?", "?…", sql)
    return sql[:160]


def _listen(conn: Connection, capture: Capture) -> None:
    driver = conn.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)

    def explain(_c: Any, _cursor: Any, statement: str, params: Any, _ctx: Any, many: bool) -> None:
        head = statement.lstrip().split(None, 1)[0].upper()
        if head not in ("SELECT", "UPDATE", "INSERT", "DELETE") or not capture.step:
            return
        args = params[0] if many and params else params
        with driver.cursor() as cursor:
            cursor.execute("SAVEPOINT explained")
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {statement}", args)
            row = cursor.fetchone()
            cursor.execute("ROLLBACK TO SAVEPOINT explained")
        assert row is not None
        top = row[0][0]
        plan = top["Plan"]
        buffers = sum(plan.get(k, 0) for k in ("Shared Hit Blocks", "Shared Read Blocks"))
        capture.found.append(
            Explained(
                capture.step,
                _short(statement),
                list(_scans(plan)),
                int(plan.get("Actual Rows", 0)),
                buffers,
                float(top["Execution Time"]),
            )
        )

    event.listen(conn, "before_cursor_execute", explain)


def _ids(conn: Connection, state: JobState, limit: int = 10_000) -> list[tuple[str, int, str]]:
    stmt = text("SELECT id, attempt, site FROM jobs WHERE state = :s AND owner = 'bench' LIMIT :n")
    return [(r.id, r.attempt, r.site) for r in conn.execute(stmt, {"s": state.value, "n": limit})]


def _moves(
    rows: list[tuple[str, int, str]], frm: JobState, to: JobState, **values: Any
) -> list[Change]:
    return [Change(j, a, frm, to, reason="plans", values=values) for j, a, _ in rows]


def _steps(settings: Settings) -> list[tuple[str, Callable[[Connection], object]]]:
    limits = Limits.of(settings)
    t = now()

    def claims(conn: Connection) -> object:
        rows = _ids(conn, S.ACTIVATED)
        load(conn, [j for j, _, _ in rows], lock=True)
        return transitions.apply(conn, _moves(rows, S.ACTIVATED, S.SENT, pilot_id="p"), t)

    def release(conn: Connection) -> object:
        # As after a claim batch: the sites' queues have room again.
        transitions.apply(conn, _moves(_ids(conn, S.ACTIVATED), S.ACTIVATED, S.SENT), t)
        sites = {s for _, _, s in _ids(conn, S.THROTTLED)}
        return activation.release(conn, t, limits, sites)

    def ends(conn: Connection) -> object:
        sent, starting, running = (_ids(conn, s) for s in (S.SENT, S.STARTING, S.RUNNING))
        changes = _moves(sent, S.SENT, S.STARTING, heartbeat_at=t, started_at=t)
        changes += _moves(starting, S.STARTING, S.RUNNING, heartbeat_at=t)
        changes += _moves(running, S.RUNNING, S.HOLDING) + _moves(running, S.HOLDING, S.FINISHED)
        transitions.apply(conn, changes, t)
        endings.flush(conn, t)
        return None

    def heartbeats(conn: Connection) -> object:
        rows = _ids(conn, S.RUNNING) + _ids(conn, S.STARTING)
        loaded = load(conn, [j for j, _, _ in rows], lock=True)
        beats = [JobEvent(uuid.uuid4().hex, j, a, "p", "heartbeat", 0.0) for j, a, _ in rows]
        events._heartbeats(conn, beats, loaded, t)
        return None

    def submission(conn: Connection) -> object:
        sites = sorted({s for _, _, s in _ids(conn, S.THROTTLED)})
        specs = [
            JobSpec("true", id=uuid.uuid4().hex, site=sites[n % len(sites)]) for n in range(500)
        ]
        return store_jobs(conn, Brokerage.of(conn, settings), specs, {}, t, limits)

    return [
        ("claims", claims),
        ("release", release),
        ("events", ends),
        ("heartbeats", heartbeats),
        ("submission", submission),
    ]


def _backlog(engine: Engine, backlog: int) -> None:
    tag = uuid.uuid4().hex[:6]
    throttled = max(0, backlog // SITES - PER_STATE * len(LIVE))
    with transaction(engine) as conn:
        for n in range(SITES):
            site = f"PLANS-{tag}-{n}"
            add_site(conn, site)
            for state, count in [(s, PER_STATE) for s in LIVE] + [(S.THROTTLED, throttled)]:
                for statement in BACKLOG.split(";"):
                    params = {"tag": f"{site}-{state.value}", "site": site, "state": state.value}
                    conn.execute(text(statement), params | {"n": count})


def measure(url: str, state: str, old_jobs: int, backlog: int) -> list[Explained]:
    """The hot path's statements explained on a database in ``state``."""
    engine = open_engine(url)
    try:
        upgrade(engine)
        if old_jobs:
            seed_old_jobs(engine, old_jobs, uuid.uuid4().hex[:6].upper())
        _backlog(engine, backlog)
        if state != "new":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE")
        capture = Capture()
        for name, step in _steps(Settings(database_url=url)):
            with engine.connect() as conn:
                _listen(conn, capture)
                with conn.begin() as outer:
                    capture.step = name
                    step(conn)
                    capture.step = ""
                    outer.rollback()
        return capture.found
    finally:
        engine.dispose()


@contextmanager
def _database(admin: str) -> Iterator[str]:
    name = f"pandamq_plans_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        base = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1/postgres")
    parser.add_argument("--backlog", type=int, default=5000)
    parser.add_argument("--old-jobs", type=int, nargs="*", default=[10_000, 1_000_000])
    parser.add_argument("--new", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    states = (["new"] if args.new else []) + [f"old-{n}" for n in args.old_jobs]
    report: dict[str, list[dict[str, Any]]] = {}
    for state in states:
        old = 0 if state == "new" else int(state.split("-")[1])
        with _database(args.postgres) as url:
            found = measure(url, state, old, args.backlog)
        report[state] = [e.__dict__ for e in found]
        print(f"\n== {state}: {old} finished jobs, backlog {args.backlog}")
        for e in found:
            print(f"{e.step:10s} {e.buffers:7d} buf {e.rows:6d} rows {e.ms:8.2f} ms  {e.sql}")
            print(f"{'':10s} {' / '.join(e.scans)}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
