"""``pandamq watch``: follow jobs or a task to their end, from the endings the broker
service publishes; each ending is a line as it comes."""

from __future__ import annotations

import sys

import click

from broker.api import JobEnding, TaskEnding
from broker.errors import BadInput
from cli.context import EXIT_FAILED, client, connection_options


def _line(ending: JobEnding | TaskEnding) -> str:
    if isinstance(ending, TaskEnding):
        counts = ", ".join(f"{n} {s}" for s, n in ending.jobs_by_state.items())
        return f"task {ending.task_id} {ending.status} ({counts})"
    how = f"exit {ending.exit_code}" if ending.exit_code is not None else ""
    error = f"error {ending.error_family}:{ending.error_code}" if ending.error_code else ""
    details = ", ".join(d for d in (f"attempt {ending.attempt}", how, error) if d)
    return f"job {ending.job_id} {ending.state} ({details})"


@click.command()
@click.option("--job", "job_ids", multiple=True, help="A job to follow (repeat for more).")
@click.option("--task", help="A task to follow: its jobs as they end, then the task.")
@click.option("--timeout", type=float, default=None, help="Give up after SECONDS; exit 1.")
@connection_options
@click.pass_context
def watch(
    ctx: click.Context, job_ids: tuple[str, ...], task: str | None, timeout: float | None
) -> None:
    """Print each ending of the jobs or task named until all have ended; exit 1 unless
    every job finished (or the task is done)."""
    if not job_ids and not task:
        raise BadInput("name a task (--task) or at least one job (--job)")
    c = client(ctx)
    if task is not None:
        c.task(task)  # an unknown task, or another user's, is refused before waiting
    ok, ended = True, set()
    for ending in c.watch(job_ids, task, timeout):
        click.echo(_line(ending))
        if isinstance(ending, TaskEnding):
            ok = ending.status == "done"
            ended.add(ending.task_id)
        else:
            ok = ok and (task is not None or ending.state == "finished")
            ended.add(ending.job_id)
    missing = (set(job_ids) | ({task} if task else set())) - ended
    if missing:
        click.echo(f"not ended after {timeout} s: {', '.join(sorted(missing))}", err=True)
    if missing or not ok:
        sys.exit(EXIT_FAILED)
