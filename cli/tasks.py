"""``pandamq tasks`` and ``pandamq task ID``: tasks and their progress; submitting a task."""

from __future__ import annotations

import sys
import time

import click
from rich.console import Console
from sqlalchemy import Engine

from broker.protocol import TaskSpec
from broker.settings import Settings
from broker.store.engine import transaction
from broker.store.tasks import get_task, list_tasks
from cli.context import EXIT_FAILED, connection_options, database, settings
from cli.render import print_json, print_table
from cli.submitter import check_task, publish_task

LIST_COLUMNS = ["id", "name", "status", "jobs", "files_done", "files_failed", "created_at"]
#: How often ``submit --wait`` looks at a task.
POLL_S = 0.5


@click.command()
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@connection_options
@click.pass_context
def tasks(ctx: click.Context, limit: int, as_json: bool) -> None:
    """List tasks, newest first, with their progress."""
    with transaction(database(settings(ctx))) as conn:
        rows = list_tasks(conn, limit)
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
    with transaction(database(settings(ctx))) as conn:
        record = get_task(conn, task_id)
    if as_json:
        print_json(record)
        return
    console = Console(width=200)
    for key, value in record.items():
        console.print(f"[bold]{key:>20}[/bold]  {value}", highlight=False)


def submit_task(
    s: Settings, engine: Engine, spec: TaskSpec, wait: bool, timeout: float | None
) -> None:
    """Check and publish a task; with ``wait``, follow it until it ends (exit 1 unless done)."""
    check_task(engine, spec)
    publish_task(s, spec)
    click.echo(spec.id)
    if not wait:
        return
    status = _follow(engine, spec.id, timeout)
    if status != "done":
        click.echo(f"task {spec.id} ended {status}", err=True)
        sys.exit(EXIT_FAILED)


def _follow(engine: Engine, task_id: str, timeout: float | None) -> str:
    """The task's status once it has ended, or as it is at ``timeout``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    status = "submitted"
    while deadline is None or time.monotonic() < deadline:
        with transaction(engine) as conn:
            known = [t for t in list_tasks(conn) if t["id"] == task_id]
        status = known[0]["status"] if known else "submitted"
        if status not in ("submitted", "running"):
            break
        time.sleep(POLL_S)
    return status
