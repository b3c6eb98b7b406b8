"""``pandamq kill`` and ``pandamq retry``: commands the broker service carries out
and answers with what they changed; ``--wait`` follows the changed jobs to their end."""

from __future__ import annotations

import sys

import click

from broker.api import CommandOutcome
from broker.client import Client
from broker.errors import BadInput
from cli.context import EXIT_FAILED, client, connection_options
from cli.submitter import follow, not_done


def _report(outcome: CommandOutcome, done: str) -> None:
    """What the command changed, on stdout; what it left as it was, and why, on stderr."""
    click.echo(f"{outcome.command}: {done} {len(outcome.changed)} job(s)")
    for job_id, why in sorted(outcome.unchanged.items()):
        click.echo(f"{job_id}: not changed: {why}", err=True)
    if not outcome.changed:
        click.echo(f"pandamq: error: {outcome.command} changed nothing", err=True)
        sys.exit(EXIT_FAILED)


def _wait(c: Client, outcome: CommandOutcome, wait_s: float) -> None:
    """Follow the changed jobs to their end; exit 1 unless all ended in time."""
    ended = follow(c, outcome.changed, wait_s)
    for job_id, ending in sorted(ended.items()):
        click.echo(f"{job_id} {ending.state} (attempt {ending.attempt})")
    late = not_done(outcome.changed, ended, c)
    for job_id, state in sorted(late.items()):
        click.echo(f"{job_id} is still {state} after {wait_s:g} s", err=True)
    if late:
        sys.exit(EXIT_FAILED)


def _named(job_ids: tuple[str, ...], task: str | None) -> None:
    if not job_ids and not task:
        raise BadInput("name at least one job ID, or --task")


@click.command()
@click.argument("job_ids", nargs=-1)
@click.option("--task", help="Kill every job of this task.")
@click.option("--reason", default="", help="Why; recorded on each killed job.")
@click.option(
    "--wait",
    "wait_s",
    type=float,
    default=None,
    help="Wait up to SECONDS for every killed job to end; exit 1 if one does not.",
)
@connection_options
@click.pass_context
def kill(
    ctx: click.Context,
    job_ids: tuple[str, ...],
    task: str | None,
    reason: str,
    wait_s: float | None,
) -> None:
    """Kill jobs: queued ones are cancelled, running ones' pilots stop their payloads."""
    _named(job_ids, task)
    c = client(ctx)
    outcome = c.kill(job_ids, task, reason)
    _report(outcome, "killed")
    if wait_s is not None:
        _wait(c, outcome, wait_s)


@click.command()
@click.argument("job_ids", nargs=-1)
@click.option("--task", help="Retry every failed job of this task.")
@click.option(
    "--wait",
    "wait_s",
    type=float,
    default=None,
    help="Wait up to SECONDS for every new attempt to end; exit 1 if one does not.",
)
@connection_options
@click.pass_context
def retry(
    ctx: click.Context, job_ids: tuple[str, ...], task: str | None, wait_s: float | None
) -> None:
    """Retry failed jobs by hand: each gets a new attempt, whatever its error."""
    _named(job_ids, task)
    c = client(ctx)
    outcome = c.retry(job_ids, task)
    _report(outcome, "started a new attempt of")
    if wait_s is not None:
        _wait(c, outcome, wait_s)
