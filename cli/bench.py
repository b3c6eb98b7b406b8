"""``pandamq bench``: the lifecycle benchmark, with a progress bar, a table and
a last line of JSON."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, cast

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from cli.benchmark.lifecycle import MODES, Mode, Plan, run
from cli.context import connection_options, settings


@click.command()
@click.option("--mode", type=click.Choice(MODES), default="capacity", show_default=True)
@click.option("--jobs", type=click.IntRange(min=1), default=20_000, show_default=True)
@click.option("--brokers", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--sites", type=click.IntRange(min=1), default=4, show_default=True)
@click.option(
    "--pilots-per-site",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Real pilot processes per site (--mode full).",
)
@click.option(
    "--heartbeat-seconds",
    type=click.FloatRange(min=1),
    default=30.0,
    show_default=True,
    help="How long the jobs heartbeat (--mode heartbeat).",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Submissions per second (0: all at once, to saturate the broker).",
)
@click.option(
    "--old-jobs",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Finished jobs (with their history) put in the database first (PostgreSQL).",
)
@click.option(
    "--idle-seconds",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="How long the CPU of idle processes is measured (--mode idle).",
)
@click.option(
    "--queriers",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Submitters asking `jobs` and `job ID` once a second (--mode queries).",
)
@click.option(
    "--querier-processes",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Processes the submitters are spread over, as threads (--mode queries).",
)
@click.option(
    "--queriers-first",
    is_flag=True,
    help="Run with the submitters first, then without (--mode queries).",
)
@click.option(
    "--owner-jobs",
    type=click.IntRange(min=1),
    default=200_000,
    show_default=True,
    help="Jobs of the one user whose pages are timed (--mode pages).",
)
@click.option(
    "--deep-page",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="The page of the cursor chain timed beside the first (--mode pages).",
)
@click.option(
    "--tries",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="How often each page is timed (--mode pages).",
)
@click.option("--timeout", type=click.FloatRange(min=1), default=900.0, show_default=True)
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the services' logs go (default: a new temporary directory).",
)
@connection_options
@click.pass_context
def bench(
    ctx: click.Context,
    mode: str,
    jobs: int,
    brokers: int,
    sites: int,
    pilots_per_site: int,
    heartbeat_seconds: float,
    rate: float,
    old_jobs: int,
    idle_seconds: float,
    queriers: int,
    querier_processes: int,
    queriers_first: bool,
    owner_jobs: int,
    deep_page: int,
    tries: int,
    timeout: float,
    work_dir: Path | None,
) -> None:
    """Run N jobs through their whole life on RabbitMQ and the database; report the figures."""
    s = settings(ctx)
    plan = Plan(
        cast(Mode, mode),
        jobs,
        brokers,
        sites,
        pilots_per_site,
        heartbeat_seconds,
        timeout,
        rate,
        old_jobs,
        idle_seconds,
        queriers,
        min(querier_processes, queriers),
        queriers_first,
        owner_jobs,
        deep_page,
        tries,
    )
    where = work_dir or Path(tempfile.mkdtemp(prefix="pandamq-bench-"))
    console = Console(stderr=True)
    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        what, total = _progress(mode, plan)
        task = progress.add_task(f"{mode}: {what}", total=total)
        figures = run(s, plan, where, lambda done, total: progress.update(task, completed=done))
    Console().print(_table(figures))
    click.echo(json.dumps(figures, sort_keys=True))


def _progress(mode: str, plan: Plan) -> tuple[str, int]:
    """What the progress bar counts, and up to how many."""
    if mode == "idle":
        return "seconds", int(plan.idle_s)
    if mode == "pages":
        return "pages asked", plan.deep_page + 2 * plan.tries
    return "jobs finished", plan.jobs


def _table(figures: dict[str, Any]) -> Table:
    table = Table(title="pandamq lifecycle benchmark", header_style="bold")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in figures.items():
        table.add_row(name, json.dumps(value) if isinstance(value, dict) else str(value))
    return table
