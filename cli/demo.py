"""``pandamq demo``: the whole system in one process, with a live table."""

from __future__ import annotations

import functools
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from sqlalchemy import Engine

from broker.client import Client
from broker.errors import BadInput, PandaMQError, PermanentError
from broker.protocol import JobSpec
from broker.service.server import BrokerService
from broker.settings import Settings
from broker.states import FINAL_STATES, JobState
from broker.store.clock import now
from broker.store.engine import open_engine, transaction
from broker.store.jobs import get_job, places_of
from broker.store.migrate import upgrade
from broker.store.sites import add_site
from cli.context import EXIT_FAILED, connection_options, settings
from cli.demo_data import SCOPE, TRANSFER_DELAY_S, input_name, put_inputs, subscription_summary
from cli.render import table
from ddm_bridge.bridge import DDMBridge
from pilot_agent.agent import Pilot, Slot

SITES = ("SITE_A", "SITE_B")
PILOTS_PER_SITE = 2
DEMO_TIMEOUT_S = 600.0
ALWAYS_SHOWN = {
    JobState.ASSIGNED,
    JobState.ACTIVATED,
    JobState.RUNNING,
    JobState.FINISHED,
    JobState.FAILED,
}


def demo_specs(count: int, run: str) -> list[JobSpec]:
    """About ``count`` short jobs over the demo sites; every seventh fails on purpose.

    Job ``i`` reads input ``i`` (which may be at the other site) and writes an output.
    """
    specs = []
    for i in range(count):
        fails = i % 7 == 3
        source, output = input_name(run, i), f"demo-{run}-{i:03d}.out"
        command = (
            f"echo 'job {i}: simulated failure' >&2; exit {3 + i % 2}"
            if fails
            else f"echo 'job {i} on' $(hostname); wc -l < {source} > {output}; "
            f"sleep 0.{(i * 37) % 10}"
        )
        # every job names a demo site: on a shared database other online
        # sites may have no pilots
        site = SITES[i % len(SITES)]
        specs.append(
            JobSpec(
                command=command,
                id=f"demo-{run}-{i:03d}",
                site=site,
                name=f"demo job {i}",
                input_files=[f"{SCOPE}:{source}"],
                output_files=[] if fails else [output],
            )
        )
    return specs


class _Worker(threading.Thread):
    """A daemon thread that remembers how its target ended."""

    def __init__(self, name: str, target: Callable[[], Any]) -> None:
        super().__init__(name=name, daemon=True)
        self._target_fn = target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._target_fn()
        except BaseException as exc:  # reported by the demo, which then stops
            self.error = exc


@click.command()
@click.option("--jobs", "count", type=click.IntRange(1, 10000), default=50, show_default=True)
@connection_options
@click.pass_context
def demo(ctx: click.Context, count: int) -> None:
    """Run broker, two sites with two pilots each, and ~50 jobs, in this one process."""
    overrides = ctx.ensure_object(dict).get("overrides", {})
    with tempfile.TemporaryDirectory(prefix="pandamq-demo-") as tmp:
        s = Settings(
            broker_url=overrides.get("broker_url", "memory://"),
            database_url=overrides.get("database_url", f"sqlite:///{Path(tmp) / 'demo.sqlite'}"),
            heartbeat_interval_s=2.0,
            work_dir=str(Path(tmp) / "work"),
            ddm_root=str(Path(tmp) / "se"),
            transfer_delay_s=TRANSFER_DELAY_S,
            # Its jobs that fail on purpose are retried at once: the demo ends when all are.
            retry_backoff_s=0.0,
        )
        settings(ctx)  # validate flags like every other command
        ok = _run(s, count)
    if not ok:
        ctx.exit(EXIT_FAILED)


def _run(s: Settings, count: int) -> bool:
    console = Console()
    engine = open_engine(s.database_url)
    upgrade(engine)
    with transaction(engine) as conn:
        for site in SITES:
            add_site(conn, site)
    stop = threading.Event()
    run, since = uuid.uuid4().hex[:8], now()
    dataset = put_inputs(s, engine, run, count, SITES)
    workers = _start(s, engine, stop)
    specs = demo_specs(count, run)
    started = time.monotonic()
    try:
        _submit(s, specs)
        console.print(
            f"submitted {len(specs)} jobs to {', '.join(SITES)} "
            f"({PILOTS_PER_SITE} pilots each) on {s.broker_url.split('@')[-1]}; "
            f"their inputs ({dataset}) are spread over the sites, so jobs wait in "
            "assigned while data moves"
        )
        places = _watch(console, engine, [sp.id for sp in specs], workers)
        if not console.is_terminal:
            console.line()  # a live display off a terminal leaves its last line open
        console.print(subscription_summary(engine, since))
        return _summary(console, engine, places, time.monotonic() - started)
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=15)
        engine.dispose()


def _submit(s: Settings, specs: list[JobSpec]) -> None:
    """Submit through the client, as a person would; every job must be accepted."""
    with Client(s) as c:
        refused = [r for r in c.submit(specs) if not r.accepted]
    if refused:
        raise BadInput(f"{len(refused)} demo job(s) refused: {refused[0].reason}")


def _start(s: Settings, engine: Engine, stop: threading.Event) -> list[_Worker]:
    ready = threading.Event()
    broker = _Worker("broker", lambda: BrokerService(s, engine).run(stop, ready))
    broker.start()
    while not ready.wait(0.1):
        if not broker.is_alive():
            raise broker.error or PermanentError("the broker service stopped while starting")
    bridge = _Worker("ddm-bridge", lambda: DDMBridge(s, engine).run(stop))
    bridge.start()
    pilots = [
        _Worker(f"pilot-{site}-{n}", functools.partial(Pilot(s, Slot(site)).run, stop))
        for site in SITES
        for n in range(PILOTS_PER_SITE)
    ]
    for p in pilots:
        p.start()
    return [broker, bridge, *pilots]


def _watch(
    console: Console, engine: Engine, ids: list[str], workers: list[_Worker]
) -> dict[str, tuple[str | None, str]]:
    deadline = time.monotonic() + DEMO_TIMEOUT_S
    with Live(console=console, refresh_per_second=4) as live:  # redraws in place
        while True:
            with transaction(engine) as conn:
                places = places_of(conn, ids)
            live.update(_table(places, len(ids)))
            if len(places) == len(ids) and all(st in FINAL_STATES for _, st in places.values()):
                return places
            _check(workers, deadline)
            time.sleep(0.25)


def _check(workers: list[_Worker], deadline: float) -> None:
    for w in workers:
        if w.error is not None:
            if isinstance(w.error, PandaMQError):
                raise w.error
            raise PermanentError(f"{w.name} crashed: {w.error!r}") from w.error
    if time.monotonic() > deadline:
        raise PermanentError(f"jobs did not all end within {DEMO_TIMEOUT_S:.0f} s")


def _table(places: dict[str, tuple[str | None, str]], total: int) -> Group:
    counts = Counter((site or "-", state) for site, state in places.values())
    present = {state for _, state in counts}
    shown = [st for st in JobState if st in ALWAYS_SHOWN or st.value in present]
    t = Table(title="jobs per site and state", header_style="bold", box=box.SIMPLE_HEAD)
    t.add_column("site")
    for state in shown:
        t.add_column(state.value, justify="right")
    for site in sorted({site for site, _ in counts}):
        t.add_row(site, *(str(counts.get((site, st.value), "")) for st in shown))
    ended = sum(st in FINAL_STATES for _, st in places.values())
    return Group(t, f"{ended}/{total} jobs ended")


def _summary(
    console: Console, engine: Engine, places: dict[str, tuple[str | None, str]], elapsed: float
) -> bool:
    states = Counter(st for _, st in places.values())
    summary = ", ".join(f"{n} {st}" for st, n in sorted(states.items()))
    console.print(f"all {len(places)} jobs ended in {elapsed:.1f} s: {summary}")
    failed = sorted(job_id for job_id, (_, st) in places.items() if st == JobState.FAILED)
    if failed:
        with transaction(engine) as conn:
            rows = [get_job(conn, job_id) for job_id in failed]
        console.print(
            table(
                rows,
                ["id", "site", "exit_code", "error_code", "diagnostic"],
                title="failed jobs (designed to fail)",
            )
        )
    return all(st in FINAL_STATES for _, st in places.values())
