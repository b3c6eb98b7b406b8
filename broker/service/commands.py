"""People's commands: kill jobs, retry failed jobs (by id, or every job of a task)."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import Connection, Engine, RowMapping, select

from broker.api import CommandOutcome
from broker.error_codes import ErrorFamily
from broker.messaging.consumer import Incoming
from broker.operations import kills, retries
from broker.operations.scouting import Scouting
from broker.operations.throttle import Limits
from broker.protocol import JobCommand
from broker.security import senders
from broker.settings import Settings
from broker.states import JobState
from broker.store.clock import now
from broker.store.engine import transaction
from broker.store.jobs import load
from broker.store.schema import jobs
from broker.store.tasks import reopen

log = logging.getLogger(__name__)


class CommandHandler:
    """Handles batches from ``pandamq.commands``, one transaction per batch."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self._engine = engine
        self._settings = settings
        self._policy = retries.Policy.of(settings)
        self._limits = Limits.of(settings)
        self._scouting = Scouting(settings)

    def __call__(self, batch: list[Incoming[JobCommand]]) -> None:
        """Carry out each command in order; answer each with what it changed."""
        t = now()
        with transaction(self._engine) as conn:
            for incoming in batch:
                rows = self._allowed(conn, incoming)
                if rows is None:
                    continue
                command = incoming.message
                if command.command == "kill":
                    outcome = kills.kill(conn, rows, command.reason, t)
                    log.info("kill of %d job(s): %s", len(rows), outcome)
                    changed = kills.changed(outcome)
                else:
                    outcome, changed = self._retry(conn, rows, t, incoming.user_id)
                incoming.reply(_outcome(command.command, rows, changed, outcome))

    def _allowed(self, conn: Connection, incoming: Incoming[JobCommand]) -> list[RowMapping] | None:
        """The jobs the command names, if they exist and the sender may manage them."""
        command = incoming.message
        rows = _targets(conn, command)
        missing = _missing(command, rows)
        if missing:
            incoming.refuse(f"{command.command}: {missing}", "not_found")
            return None
        why = senders.manage_refusal(self._settings, incoming.user_id, command.command, rows)
        if not senders.check(incoming, command.command, why):
            return None
        return rows

    def _retry(
        self, conn: Connection, rows: list[RowMapping], t: datetime, by: str | None
    ) -> tuple[dict[str, str], list[str]]:
        """Retry the failed jobs; an exhausted task of theirs (or of the jobs held
        for it) is resumed."""
        decided = self._decide(conn, rows)
        started = retries.retry(conn, decided, t, self._limits, self._policy)
        changed = [row["id"] for row, _ in decided]
        task_ids = {row["task_id"] for row, _ in decided if row["task_id"]}
        resumed = self._scouting.resume(conn, {r["task_id"] for r in rows if r["task_id"]}, t, by)
        reopen(conn, task_ids)
        changed += [r["id"] for r in rows if r["task_id"] in resumed and r["state"] == "pending"]
        log.info("retry by hand: %d of %d job(s) started again", started, len(rows))
        outcome = {
            row["id"]: f"is {row['state']}; only failed jobs are retried"
            for row in rows
            if row["state"] != JobState.FAILED
        }
        return outcome, changed

    def _decide(
        self, conn: Connection, rows: list[RowMapping]
    ) -> list[tuple[RowMapping, retries.Decision]]:
        """Only failed jobs are retried by hand; their error does not stop it then."""
        failed = [(row, _failure_of(row)) for row in rows if row["state"] == JobState.FAILED]
        return retries.decide_all(conn, failed, self._policy, by_hand=True)


def _missing(command: JobCommand, rows: list[RowMapping]) -> str | None:
    """What the command names that is not there: a job id, or a task without jobs."""
    found = {row["id"] for row in rows}
    absent = sorted(set(command.job_ids) - found)
    if absent:
        more = f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""
        return f"no job {absent[0]!r}{more}"
    if command.task_id and not any(row["task_id"] == command.task_id for row in rows):
        return f"task {command.task_id!r} has no jobs"
    if not rows:
        return "name at least one job, or a task"
    return None


def _outcome(
    command: str, rows: list[RowMapping], changed: list[str], outcome: dict[str, str]
) -> CommandOutcome:
    unchanged = {i: why for i, why in outcome.items() if i not in changed}
    attempts = {row["id"]: int(row["attempt"]) for row in rows}
    return CommandOutcome(command, attempts, sorted(changed), unchanged)


def _targets(conn: Connection, command: JobCommand) -> list[RowMapping]:
    ids = set(command.job_ids)
    if command.task_id:
        task_jobs = select(jobs.c.id).where(jobs.c.task_id == command.task_id)
        ids |= {r.id for r in conn.execute(task_jobs)}
    return [row for _, row in sorted(load(conn, ids, lock=True).items())]


def _failure_of(row: RowMapping) -> retries.Failure:
    family = row["error_family"]
    return retries.Failure(
        ErrorFamily(family).value if family else None,
        row["error_code"],
        row["exit_code"],
        row["diagnostic"],
    )
