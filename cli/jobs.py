"""``pandamq jobs`` and ``pandamq job ID``: jobs as the broker service tells them."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from broker.api import JobRecord
from broker.errors import BadInput
from broker.monitor import render
from broker.states import JobState
from cli.context import client, connection_options
from cli.render import print_json, print_table, table

LIST_COLUMNS = ["id", "state", "site", "attempt", "exit_code", "pilot_id", "modified_at"]
FILE_COLUMNS = ["role", "attempt", "did", "size", "adler32", "dataset"]
ATTEMPT_COLUMNS = render.ATTEMPT_COLUMNS


@click.command()
@click.option("--site", help="Only jobs at this site.")
@click.option("--state", type=click.Choice([s.value for s in JobState]), help="Only this state.")
@click.option("--task", help="Only jobs of this task.")
@click.option("--owner", help="Only jobs of this user (another's needs the production role).")
@click.option("--since", help="Only jobs changed within this window: 30m, 12h, 2d, ...")
@click.option("--limit", type=click.IntRange(1, 10000), default=1000, show_default=True)
@click.option("--cursor", default="", help="The next page: the cursor the last page printed.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@connection_options
@click.pass_context
def jobs(
    ctx: click.Context,
    site: str | None,
    state: str | None,
    task: str | None,
    owner: str | None,
    since: str | None,
    limit: int,
    cursor: str,
    as_json: bool,
) -> None:
    """List your jobs (an operator: everyone's), newest first, a page at a time."""
    page = client(ctx).jobs(site, state, task, owner, since, limit, cursor)
    rows = [asdict(j) for j in page.jobs]
    if as_json:
        print_json(rows)
    else:
        print_table(rows, LIST_COLUMNS)
    if page.cursor:
        click.echo(f"more: add --cursor {page.cursor}", err=True)


@click.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--log", "show_log", is_flag=True, help="Print the payload's log from the SE.")
@click.option("--attempt", type=click.IntRange(min=1), help="With --log: this attempt's log.")
@connection_options
@click.pass_context
def job(
    ctx: click.Context, job_id: str, as_json: bool, show_log: bool, attempt: int | None
) -> None:
    """Show one job: spec, state, every transition, attempts, exit code, pilot, files."""
    if attempt is not None and not show_log:
        raise BadInput("--attempt goes with --log")
    if show_log:
        _print_log(ctx, job_id, attempt, as_json)
        return
    record = client(ctx).job(job_id)
    if as_json:
        print_json(_as_dict(record))
        return
    _print_record(record)


def _as_dict(record: JobRecord) -> dict[str, Any]:
    """The job as one JSON object: its summary's fields, then spec, history and the rest."""
    shown = asdict(record)
    return {**shown.pop("job"), **shown}


def _print_record(record: JobRecord) -> None:
    console = Console(width=200)
    for key, value in asdict(record.job).items():
        if value is not None:
            console.print(f"[bold]{key:>14}[/bold]  {escape(str(value))}", highlight=False)
    spec = escape(json.dumps(asdict(record.spec), sort_keys=True))
    console.print(f"[bold]{'spec':>14}[/bold]  {spec}", highlight=False, soft_wrap=True)
    _print_brokerage(console, record.brokerage)
    history = [asdict(t) for t in record.transitions]
    console.print(table(history, ["attempt", "from_state", "to_state", "at", "reason"], "history"))
    attempts = [asdict(a) for a in record.attempts]
    console.print(table(attempts, ATTEMPT_COLUMNS, title="attempts"))
    if record.files:
        console.print(table([asdict(f) for f in record.files], FILE_COLUMNS, title="files"))


def _print_log(ctx: click.Context, job_id: str, attempt: int | None, as_json: bool) -> None:
    """The payload's stdout and stderr from the log tarball of an attempt (default: latest)."""
    log = client(ctx).job_log(job_id, attempt)
    if as_json:
        print_json(asdict(log))
        return
    if not log.files:
        click.echo(f"(job {log.job_id} attempt {log.attempt}: the payload wrote no output)")
    for name, text in log.files.items():
        click.echo(f"==> {name} (job {log.job_id} attempt {log.attempt}) <==")
        click.echo(text, nl=not text.endswith("\n") and bool(text))


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
