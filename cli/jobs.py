"""``pandamq jobs`` and ``pandamq job ID``: read jobs from SQL."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console

from broker.states import JobState
from broker.store.engine import transaction
from broker.store.jobs import PUBLIC_FIELDS, get_job, list_jobs
from cli.context import connection_options, database, settings
from cli.render import print_json, print_table, table

LIST_COLUMNS = ["id", "state", "site", "attempt", "exit_code", "pilot_id", "modified_at"]


@click.command()
@click.option("--site", help="Only jobs at this site.")
@click.option("--state", type=click.Choice([s.value for s in JobState]), help="Only this state.")
@click.option("--task", help="Only jobs of this task.")
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@connection_options
@click.pass_context
def jobs(
    ctx: click.Context,
    site: str | None,
    state: str | None,
    task: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List jobs, newest first."""
    with transaction(database(settings(ctx))) as conn:
        rows = list_jobs(conn, site=site, state=state, task=task, limit=limit)
    if as_json:
        print_json(rows)
    else:
        print_table(rows, LIST_COLUMNS)


@click.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@connection_options
@click.pass_context
def job(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Show one job: spec, state, every transition, attempts, exit code, pilot."""
    with transaction(database(settings(ctx))) as conn:
        record = get_job(conn, job_id)
    if as_json:
        print_json(record)
        return
    console = Console(width=200)
    for key in PUBLIC_FIELDS:
        if record.get(key) is not None:
            console.print(f"[bold]{key:>14}[/bold]  {record[key]}", highlight=False)
    console.print(f"[bold]{'spec':>14}[/bold]  {record['spec']}", highlight=False)
    _print_brokerage(console, record.get("brokerage"))
    console.print(
        table(
            record["transitions"],
            ["attempt", "from_state", "to_state", "at", "reason"],
            title="history",
        )
    )
    console.print(
        table(
            record["attempts"],
            [
                "attempt",
                "site",
                "pilot_id",
                "state",
                "started_at",
                "ended_at",
                "exit_code",
                "error_code",
            ],
            title="attempts",
        )
    )


def _print_brokerage(console: Console, record: dict[str, Any] | None) -> None:
    """Where brokerage sent the job and why; every candidate's weight or reason to skip it."""
    if not record:
        return
    console.print(f"[bold]{'brokerage':>14}[/bold]  {record['why']}", highlight=False)
    rows = [{"site": s, "weight": w, "skipped because": ""} for s, w in record["weights"].items()]
    rows += [
        {"site": s, "weight": "", "skipped because": why} for s, why in record["skipped"].items()
    ]
    console.print(table(rows, ["site", "weight", "skipped because"], title="sites considered"))
