"""The lifecycle benchmark: N jobs over a few sites through their whole life,
every transition persisted, on RabbitMQ and the configured database.

Modes:
- ``capacity``: virtual pilots (``cli.benchmark.loadgen``) speak the pilot
  protocol at the broker service without running payloads;
- ``full``: real ``pandamq pilot`` processes run the payload ``true``;
- ``heartbeat``: the jobs stay running and heartbeat as fast as they can for a
  while, then finish: how many heartbeats a second the broker ingests;
- ``bulk``: one task of N files split into N jobs, persisted and brokered;
- ``idle``: the services and a pilot per site with nothing to do, and the CPU
  each uses;
- ``queries``: capacity twice on the same database, with and without submitters
  asking ``jobs`` and ``job ID`` once a second (``cli.benchmark.queriers``);
- ``pages``: the first and a deep page of a user with many jobs
  (``cli.benchmark.pages``).

``old_jobs`` first fills the database with that many finished jobs (and their
history), to show that what a run costs does not grow with the tables.
"""

from __future__ import annotations

import resource
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Engine

from broker import topology
from broker.errors import ConfigError, PermanentError
from broker.messaging.connection import broker_errors, connect, is_memory
from broker.messaging.publisher import Outgoing, open_publisher
from broker.protocol import JobSpec, encode
from broker.security import identity
from broker.settings import Settings
from broker.store.engine import open_engine, transaction
from broker.store.migrate import upgrade
from broker.store.sites import add_site
from cli.benchmark import measure, processes, queriers
from cli.benchmark.bulk import measure_bulk
from cli.benchmark.idle import measure_idle
from cli.benchmark.loadgen import LoadStats, VirtualPilots
from cli.benchmark.pages import environment as pages_environment
from cli.benchmark.pages import measure_pages
from cli.benchmark.seed import seed_old_jobs
from cli.benchmark.submissions import publish_specs

Mode = Literal["capacity", "full", "heartbeat", "bulk", "idle", "queries", "pages"]
MODES: tuple[Mode, ...] = ("capacity", "full", "heartbeat", "bulk", "idle", "queries", "pages")
#: PostgreSQL publishes its statistics counters about this often.
STATS_DELAY_S = 1.5
#: A paced submitter publishes this often.
PACE_S = 0.1


@dataclass(frozen=True)
class Plan:
    """What to run."""

    mode: Mode = "capacity"
    jobs: int = 20_000
    brokers: int = 1
    sites: int = 4
    pilots_per_site: int = 1
    heartbeat_s: float = 30.0
    timeout_s: float = 900.0
    #: Submissions per second; 0 submits everything at once (saturation).
    rate: float = 0.0
    #: Finished jobs put in the database before the run.
    old_jobs: int = 0
    #: How long the idle mode measures.
    idle_s: float = 60.0
    #: Submitters asking the API during the second (or first) run of ``queries``.
    queriers: int = 50
    #: Processes the submitters are spread over (threads within each).
    querier_processes: int = 5
    #: ``queries`` runs with the submitters first, then without.
    queriers_first: bool = False
    #: ``pages``: jobs of the one user, the page timed deep in the chain, how often.
    owner_jobs: int = 200_000
    deep_page: int = 100
    tries: int = 20


Progress = Callable[[int, int], None]


def run(settings: Settings, plan: Plan, work_dir: Path, on_progress: Progress) -> dict[str, Any]:
    """Run the plan; its figures (see ``docs/performance.md``)."""
    if is_memory(settings.broker_url):
        raise ConfigError(
            "the lifecycle benchmark runs its services as separate processes: "
            "set PANDAMQ_BROKER_URL to a RabbitMQ (amqp://...) URL"
        )
    work_dir.mkdir(parents=True, exist_ok=True)
    engine = open_engine(settings.database_url)
    upgrade(engine)
    sites = _new_sites(engine, plan.sites)
    owner = _seed(engine, plan)
    _vacuum(engine)
    env = processes.environment(settings, work_dir)
    if owner:
        env |= pages_environment(settings)
    with transaction(engine) as conn:
        db_before = measure.database_work(conn)
    services = processes.start_brokers(
        env, work_dir, plan.brokers, lambda: _submit_consumers(settings) >= plan.brokers, 60.0
    )
    if plan.mode not in ("bulk", "idle", "pages"):
        # Pilots run: a DDM bridge registers what their jobs write and moves them on.
        services.append(processes.start("ddm", ["serve", "ddm"], env, work_dir, 0))
    try:
        if plan.mode == "bulk":
            figures = measure_bulk(settings, engine, sites, plan.jobs, plan.timeout_s, on_progress)
        elif plan.mode == "idle":
            figures = measure_idle(env, work_dir, services, sites, plan.idle_s, on_progress)
        elif plan.mode == "pages":
            figures = measure_pages(
                settings, engine, owner, plan.deep_page, plan.tries, work_dir, on_progress
            )
        elif plan.mode == "queries":
            figures = _compare_queriers(
                settings, plan, engine, sites, env, work_dir, services, on_progress
            )
        else:
            figures = _measure(
                settings, plan, engine, sites, env, work_dir, services, db_before, on_progress
            )
        with transaction(engine) as conn:
            figures["job_rows"] = measure.job_rows(conn)
        return figures
    finally:
        for service in services:
            service.stop()
        engine.dispose()


def _seed(engine: Engine, plan: Plan) -> str:
    """Put in the plan's old jobs, and in ``pages`` mode the one user's; that user."""
    tag = uuid.uuid4().hex[:6].upper()
    if plan.old_jobs:
        seed_old_jobs(engine, plan.old_jobs, tag)
    if plan.mode != "pages":
        return ""
    owner = f"bench-owner-{tag.lower()}"
    seed_old_jobs(engine, plan.owner_jobs, f"{tag}-OWNED", owner)
    return owner


def _vacuum(engine: Engine) -> None:
    """Start from the steady state autovacuum keeps: earlier runs' dead row versions
    would otherwise slow every statement that reads the jobs of a state."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")


def _new_sites(engine: Engine, count: int) -> list[str]:
    """Sites of this run only, so runs never see each other's jobs."""
    tag = uuid.uuid4().hex[:6].upper()
    names = [f"BENCH-{tag}-{n + 1}" for n in range(count)]
    with transaction(engine) as conn:
        for name in names:
            add_site(conn, name)
    return names


def _submit_consumers(settings: Settings) -> int:
    """How many broker services consume submissions now."""
    with connect(settings) as connection:
        channel = connection.channel()
        try:
            return int(channel.queue_declare(topology.SUBMIT_QUEUE, passive=True).consumer_count)
        except connection.channel_errors:
            return 0


def _compare_queriers(
    settings: Settings,
    plan: Plan,
    engine: Engine,
    sites: list[str],
    env: dict[str, str],
    work_dir: Path,
    brokers: list[processes.Process],
    on_progress: Progress,
) -> dict[str, Any]:
    """Capacity without and with the submitters, one after the other on the same
    brokers and database, each on sites of its own after a ``VACUUM ANALYZE``."""
    runs: dict[str, dict[str, Any]] = {}
    for n in (plan.queriers, 0) if plan.queriers_first else (0, plan.queriers):
        if runs:
            sites = _new_sites(engine, plan.sites)
            _vacuum(engine)
        with transaction(engine) as conn:
            db_before = measure.database_work(conn)
        runs["with_queriers" if n else "without_queriers"] = _measure(
            settings,
            replace(plan, queriers=n),
            engine,
            sites,
            env,
            work_dir,
            brokers,
            db_before,
            on_progress,
        )
    with_, without = runs["with_queriers"]["jobs_per_s"], runs["without_queriers"]["jobs_per_s"]
    return {
        "mode": plan.mode,
        "jobs": plan.jobs,
        "queriers": plan.queriers,
        "querier_processes": plan.querier_processes,
        "order": "with first" if plan.queriers_first else "without first",
        "throughput_ratio": round(with_ / max(without, 1e-9), 3),
        **runs,
    }


def _measure(
    settings: Settings,
    plan: Plan,
    engine: Engine,
    sites: list[str],
    env: dict[str, str],
    work_dir: Path,
    brokers: list[processes.Process],
    db_before: measure.DatabaseWork | None,
    on_progress: Progress,
) -> dict[str, Any]:
    stop = threading.Event()
    pilots, load, thread = _start_pilots(settings, plan, sites, env, work_dir, stop)
    specs = [
        JobSpec("true", id=uuid.uuid4().hex, site=sites[n % len(sites)]) for n in range(plan.jobs)
    ]
    asking = plan.queriers if plan.mode == "queries" else 0
    ids = [s.id for s in specs]
    try:
        with queriers.querying(settings, ids, asking, plan.querier_processes) as asked:
            started = time.time()
            _submit(settings, specs, plan.rate)
            submitted = time.time()
            done = _wait_finished(engine, sites, plan, on_progress, pilots + brokers)
        rss = {
            kind: max(b.peak_rss_mb() for b in brokers if b.kind == kind)
            for kind in {b.kind for b in brokers}
        }
        if pilots:
            rss["pilot"] = max(p.peak_rss_mb() for p in pilots)
    finally:
        stop.set()
        if thread is not None:
            thread.join(30)
        for pilot in pilots:
            pilot.stop()
    rss["benchmark"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    time.sleep(STATS_DELAY_S)
    with transaction(engine) as conn:
        latencies = measure.dispatch_latencies(conn, sites)
        db_after = measure.database_work(conn)
    figures = _figures(plan, started, submitted, done, latencies, load.stats if load else None)
    figures["peak_rss_mb"] = {k: round(v, 1) for k, v in rss.items()}
    if asking:
        figures |= asked.figures(figures["elapsed_s"])
    if db_before is not None and db_after is not None:
        work = db_after - db_before
        figures["sql_transactions_per_job"] = round(work.transactions / plan.jobs, 2)
        figures["sql_rows_written_per_job"] = round(work.rows_written / plan.jobs, 2)
    return figures


def _submit(settings: Settings, specs: list[JobSpec], rate: float) -> None:
    """Publish the submissions with confirms: all at once, or paced at ``rate`` a second."""
    if rate <= 0:
        publish_specs(settings, specs)
        return
    queue = topology.Topology(settings.queue_type).submit_queue()
    chunk = max(1, int(rate * PACE_S))
    with connect(settings) as connection, broker_errors(connection, "submitting"):
        publisher = open_publisher(
            connection, settings.publish_window, settings.confirm_timeout_s, identity.of(settings)
        )
        start = time.monotonic()
        for n in range(0, len(specs), chunk):
            time.sleep(max(0.0, start + n / rate - time.monotonic()))
            publisher.publish(
                Outgoing(queue.exchange.name, queue.routing_key, encode(s))
                for s in specs[n : n + chunk]
            )


def _start_pilots(
    settings: Settings,
    plan: Plan,
    sites: list[str],
    env: dict[str, str],
    work_dir: Path,
    stop: threading.Event,
) -> tuple[list[processes.Process], VirtualPilots | None, threading.Thread | None]:
    """Real pilot processes (``full``) or the virtual pilots in a thread."""
    if plan.mode == "full":
        args = [["pilot", "--site", s] for s in sites for _ in range(plan.pilots_per_site)]
        return (
            [processes.start("pilot", a, env, work_dir, n) for n, a in enumerate(args)],
            None,
            None,
        )
    load = VirtualPilots(settings, sites)
    heartbeat_s = plan.heartbeat_s if plan.mode == "heartbeat" else 0.0
    thread = threading.Thread(
        target=load.run, args=(stop, plan.jobs, heartbeat_s), name="virtual-pilots", daemon=True
    )
    thread.start()
    return [], load, thread


def _wait_finished(
    engine: Engine,
    sites: list[str],
    plan: Plan,
    on_progress: Progress,
    children: list[processes.Process],
) -> measure.Finished:
    deadline = time.monotonic() + plan.timeout_s
    while True:
        with transaction(engine) as conn:
            done = measure.finished(conn, sites)
        on_progress(done.count, plan.jobs)
        if done.count >= plan.jobs:
            return done
        dead = [c for c in children if c.popen.poll() is not None]
        if dead or time.monotonic() > deadline:
            culprit = dead[0] if dead else children[0]
            why = (
                f"a {culprit.kind} process ended" if dead else f"not done after {plan.timeout_s} s"
            )
            raise PermanentError(
                f"benchmark stopped: {why} with {done.count}/{plan.jobs} jobs finished; "
                f"see {culprit.log_path}"
            )
        time.sleep(0.2)


def _figures(
    plan: Plan,
    started: float,
    submitted: float,
    done: measure.Finished,
    latencies: list[float],
    stats: LoadStats | None,
) -> dict[str, Any]:
    assert done.last_at is not None
    elapsed = max(done.last_at.timestamp() - started, 1e-9)
    figures: dict[str, Any] = {
        "mode": plan.mode,
        "jobs": plan.jobs,
        "brokers": plan.brokers,
        "sites": plan.sites,
        "elapsed_s": round(elapsed, 2),
        "jobs_per_s": round(plan.jobs / elapsed, 1),
        "submit_per_s": round(plan.jobs / max(submitted - started, 1e-9), 1),
        "dispatch_p50_ms": round(measure.percentile(latencies, 50) * 1000, 1),
        "dispatch_p99_ms": round(measure.percentile(latencies, 99) * 1000, 1),
    }
    if stats is not None:
        figures |= _load_figures(plan, stats, elapsed, done)
    return figures


def _load_figures(
    plan: Plan, stats: LoadStats, elapsed: float, done: measure.Finished
) -> dict[str, Any]:
    rtt = stats.claim_round_trips
    figures: dict[str, Any] = {
        "claim_rtt_p50_ms": round(measure.percentile(rtt, 50) * 1000, 1),
        "claim_rtt_p99_ms": round(measure.percentile(rtt, 99) * 1000, 1),
        "events_per_s": round(stats.events / elapsed, 1),
        # One submission each, plus what the pilots' side consumed and published.
        "messages_per_job": round((plan.jobs + stats.messages) / plan.jobs, 2),
    }
    if plan.mode == "heartbeat" and stats.heartbeats:
        assert done.last_at is not None
        # From the first heartbeat sent until the last job's end, which was
        # published after every heartbeat, was persisted.
        lag = time.monotonic() - time.time()
        span = done.last_at.timestamp() + lag - stats.heartbeat_started
        figures["heartbeats"] = stats.heartbeats
        figures["heartbeats_per_s"] = round(stats.heartbeats / max(span, 1e-9), 1)
    return figures
