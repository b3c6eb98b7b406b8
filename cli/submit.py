"""``pandamq submit``: publish jobs, optionally follow them to the end."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import Engine

from broker.errors import SpecError
from broker.states import FINAL_STATES
from cli.context import EXIT_FAILED, connection_options, database, settings
from cli.submitter import check_references, follow, parse_specs, parse_task, publish_specs
from cli.tasks import submit_task


@click.command()
@click.argument("source")
@click.option("--wait", is_flag=True, help="Follow the jobs until they end; exit 1 if any failed.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after SECONDS.")
@connection_options
@click.pass_context
def submit(ctx: click.Context, source: str, wait: bool, timeout: float | None) -> None:
    """Submit the job spec(s) or the task spec in SOURCE (JSON or YAML file, or - for stdin)."""
    name = "<stdin>" if source == "-" else source
    text = _read(source, name)
    s = settings(ctx)
    engine = database(s)
    task = parse_task(text, name)
    if task is not None:
        submit_task(s, engine, task, wait, timeout)
        return
    specs = parse_specs(text, name)
    check_references(engine, specs)
    publish_specs(s, specs)
    for spec in specs:
        click.echo(spec.id)
    if wait:
        states = _wait(engine, [spec.id for spec in specs], timeout)
        bad = {i: st for i, st in states.items() if st != "finished"}
        for job_id, state in bad.items():
            click.echo(f"job {job_id} ended {state}", err=True)
        if bad or len(states) < len(specs):
            sys.exit(EXIT_FAILED)


def _read(source: str, name: str) -> str:
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
        return data.decode()
    except OSError as exc:
        raise SpecError(f"cannot read {name}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise SpecError(f"{name}: not text ({exc.reason})") from exc


def _wait(engine: Engine, ids: list[str], timeout: float | None) -> dict[str, str]:
    columns = (TextColumn("jobs ended"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=True, disable=not sys.stderr.isatty()) as progress:
        bar = progress.add_task("jobs", total=len(ids))

        def show(states: dict[str, str]) -> None:
            progress.update(bar, completed=sum(s in FINAL_STATES for s in states.values()))

        return follow(engine, ids, timeout, show)
