"""``pandamq kill`` and ``pandamq retry``: commands carried out by the broker service."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Literal

import click
from sqlalchemy import Engine, select

from broker import topology
from broker.errors import BadInput, NotAllowed, NotFound
from broker.protocol import JobCommand, encode
from broker.security import identity, senders
from broker.settings import Settings
from broker.states import FINAL_STATES
from broker.store.engine import transaction
from broker.store.jobs import load
from broker.store.schema import jobs
from cli.context import EXIT_FAILED, connection_options, database, settings
from cli.submitter import publish_to

WAIT_POLL_S = 0.25


def _targets(engine: Engine, job_ids: tuple[str, ...], task: str | None) -> dict[str, int]:
    """The attempt each named job is at; every id must exist, and the task have jobs."""
    if not job_ids and not task:
        raise BadInput("name at least one job ID, or --task")
    with transaction(engine) as conn:
        found = {i: r["attempt"] for i, r in load(conn, job_ids).items()}
        if task:
            query = select(jobs.c.id, jobs.c.attempt).where(jobs.c.task_id == task)
            found |= {r.id: r.attempt for r in conn.execute(query)}
    missing = sorted(set(job_ids) - set(found))
    if missing:
        raise NotFound(
            f"no job {missing[0]!r}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    if task and len(found) == len(set(job_ids)):
        raise NotFound(f"task {task!r} has no jobs")
    return found


def _may_manage(engine: Engine, s: Settings, command: str, ids: list[str]) -> None:
    """Say at once what the broker service would refuse: another user's jobs."""
    with transaction(engine) as conn:
        rows = load(conn, ids).values()
    why = senders.manage_refusal(s, identity.of(s), command, rows)
    if why is not None:
        raise NotAllowed(why)


def _send(
    ctx: click.Context,
    command: Literal["kill", "retry"],
    job_ids: tuple[str, ...],
    task: str | None,
    reason: str,
) -> tuple[Engine, dict[str, int]]:
    s = settings(ctx)
    engine = database(s)
    targets = _targets(engine, job_ids, task)
    _may_manage(engine, s, command, list(targets))
    message = JobCommand(command, list(job_ids), task, reason)
    publish_to(s, topology.Topology(s.queue_type).commands_queue(), [encode(message)])
    click.echo(f"{command} requested for {len(targets)} job(s)")
    return engine, targets


def _wait(
    engine: Engine, done: Callable[[dict[str, object]], bool], ids: list[str], timeout: float
) -> dict[str, dict[str, object]]:
    deadline = time.monotonic() + timeout
    while True:
        with transaction(engine) as conn:
            rows = {i: dict(r) for i, r in load(conn, ids).items()}
        if all(done(r) for r in rows.values()) or time.monotonic() > deadline:
            return rows
        time.sleep(WAIT_POLL_S)


def _ended(row: dict[str, object]) -> bool:
    return row["state"] in FINAL_STATES


def _report(rows: dict[str, dict[str, object]], ok: Callable[[dict[str, object]], bool]) -> None:
    bad = 0
    for job_id, row in sorted(rows.items()):
        click.echo(f"{job_id} {row['state']} (attempt {row['attempt']})")
        bad += not ok(row)
    if bad:
        click.echo(f"{bad} job(s) not done in time", err=True)
        sys.exit(EXIT_FAILED)


@click.command()
@click.argument("job_ids", nargs=-1)
@click.option("--task", help="Kill every job of this task.")
@click.option("--reason", default="", help="Why; recorded on each killed job.")
@click.option(
    "--wait",
    "wait_s",
    type=float,
    default=None,
    help="Wait up to SECONDS for every job to end; exit 1 if one does not.",
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
    engine, targets = _send(ctx, "kill", job_ids, task, reason)
    if wait_s is not None:
        _report(_wait(engine, _ended, list(targets), wait_s), _ended)


@click.command()
@click.argument("job_ids", nargs=-1)
@click.option("--task", help="Retry every failed job of this task.")
@click.option(
    "--wait",
    "wait_s",
    type=float,
    default=None,
    help="Wait up to SECONDS for each new attempt to start; exit 1 if one does not.",
)
@connection_options
@click.pass_context
def retry(
    ctx: click.Context, job_ids: tuple[str, ...], task: str | None, wait_s: float | None
) -> None:
    """Retry failed jobs by hand: each gets a new attempt, whatever its error."""
    engine, targets = _send(ctx, "retry", job_ids, task, "")
    if wait_s is not None:

        def moved(r: dict[str, object]) -> bool:
            return r["attempt"] != targets[str(r["id"])]

        _report(_wait(engine, moved, list(targets), wait_s), moved)
