"""``pandamq submit``: send jobs or a task to the broker service, optionally follow
them to their end (from the endings it publishes, not by polling)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from broker.client import Client
from broker.client.follow import owner_keys
from broker.errors import SpecError
from broker.protocol import JobSpec, TaskSpec
from cli.context import EXIT_BAD_INPUT, EXIT_FAILED, client, connection_options
from cli.submitter import follow, follow_task, not_done, parse_specs, parse_task


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
    task = parse_task(text, name)
    specs = None if task is not None else parse_specs(text, name)
    c = client(ctx)
    if task is not None:
        _submit_task(c, task, wait, timeout)
    else:
        assert specs is not None
        _submit_jobs(c, specs, wait, timeout)


def _submit_task(c: Client, task: TaskSpec, wait: bool, timeout: float | None) -> None:
    receipt = c.submit_task(task)
    click.echo(task.id)
    if receipt.reason:
        click.echo(f"pandamq: note: task {task.id} {receipt.reason}", err=True)
    if not wait:
        return
    ending = follow_task(c, task.id, timeout)
    if ending is None:
        click.echo(f"task {task.id} is still running after {timeout} s", err=True)
        sys.exit(EXIT_FAILED)
    if ending.status != "done":
        click.echo(f"task {task.id} ended {ending.status}", err=True)
        sys.exit(EXIT_FAILED)


def _submit_jobs(c: Client, specs: list[JobSpec], wait: bool, timeout: float | None) -> None:
    # Bound before submitting, so that no ending can pass before the follower listens.
    follower = c.following(owner_keys(c.user)) if wait else None
    receipts = c.submit(specs)
    accepted = [r.id for r in receipts if r.accepted]
    for receipt in receipts:
        if receipt.accepted:
            click.echo(receipt.id)
        else:
            click.echo(f"pandamq: error: {receipt.reason}", err=True)
    if len(accepted) < len(receipts):
        sys.exit(EXIT_BAD_INPUT)
    if wait:
        ended = follow(c, accepted, timeout, follower)
        bad = {i: e.state for i, e in ended.items() if e.state != "finished"}
        for job_id, state in sorted(bad.items()):
            click.echo(f"job {job_id} ended {state}", err=True)
        for job_id, state in sorted(not_done(accepted, ended, c).items()):
            click.echo(f"job {job_id} is still {state} after {timeout} s", err=True)
        if bad or len(ended) < len(accepted):
            sys.exit(EXIT_FAILED)


def _read(source: str, name: str) -> str:
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
        return data.decode()
    except OSError as exc:
        raise SpecError(f"cannot read {name}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise SpecError(f"{name}: not text ({exc.reason})") from exc
