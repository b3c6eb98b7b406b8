"""``pandamq tasks`` and ``pandamq task ID``: tasks and their progress."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console

from cli.context import client, connection_options
from cli.render import print_json, print_table

LIST_COLUMNS = ["id", "name", "status", "jobs", "files_done", "files_failed", "created_at"]


@click.command()
@click.option("--owner", help="Only tasks of this user (another's needs the production role).")
@click.option("--limit", type=click.IntRange(1, 10000), default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@connection_options
@click.pass_context
def tasks(ctx: click.Context, owner: str | None, limit: int, as_json: bool) -> None:
    """List your tasks (an operator: everyone's), newest first, with their progress."""
    rows = client(ctx).tasks(limit, owner)
    if as_json:
        print_json(rows)
    else:
        print_table(rows, LIST_COLUMNS)


@click.command()
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@connection_options
@click.pass_context
def task(ctx: click.Context, task_id: str, as_json: bool) -> None:
    """Show one task: spec, status, jobs per state, files done and failed."""
    record = client(ctx).task(task_id)
    if as_json:
        print_json(record)
        return
    console = Console(width=200)
    if record.get("tuning"):
        record = {**record, "tuning": tuning_text(record["tuning"])}
    for key, value in record.items():
        console.print(f"[bold]{key:>20}[/bold]  {value}", highlight=False)


def tuning_text(tuning: dict[str, Any]) -> str:
    """A task's tuning in one line: what its jobs ask for, and from what."""
    asks = [
        "memory as asked" if tuning["memory_mb"] is None else f"{tuning['memory_mb']} MB",
        "walltime as asked" if tuning["walltime_s"] is None else f"{tuning['walltime_s']} s",
    ]
    measured = [
        f"{label} {tuning[key]}{unit}"
        for key, label, unit in (
            ("peak_rss_mb", "peak", " MB"),
            ("wall_time_s", "wall", " s"),
            ("cpu_time_s", "CPU", " s"),
            ("output_bytes", "output", " bytes"),
        )
        if tuning.get(key) is not None
    ]
    return (
        f"{', '.join(asks)} from {tuning['jobs']} finished job(s) at percentile "
        f"{tuning['percentile']:g}" + (f" ({', '.join(measured)})" if measured else "")
    )
