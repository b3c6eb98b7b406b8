"""People's commands: kill jobs, retry failed jobs (by id, or every job of a task)."""

from __future__ import annotations

import logging

from sqlalchemy import Connection, Engine, RowMapping, select

from broker.error_codes import ErrorFamily
from broker.messaging.consumer import Incoming
from broker.protocol import JobCommand
from broker.security import senders
from broker.service import kills, retries
from broker.service.throttle import Limits
from broker.settings import Settings
from broker.states import JobState
from broker.store.clock import now
from broker.store.engine import transaction
from broker.store.jobs import load
from broker.store.schema import jobs

log = logging.getLogger(__name__)


class CommandHandler:
    """Handles batches from ``pandamq.commands``, one transaction per batch."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self._engine = engine
        self._settings = settings
        self._memory_factor = settings.memory_retry_factor
        self._limits = Limits.of(settings)

    def __call__(self, batch: list[Incoming[JobCommand]]) -> None:
        """Carry out each command in order."""
        t = now()
        with transaction(self._engine) as conn:
            for incoming in batch:
                command = incoming.message
                rows = _targets(conn, command)
                if not rows:
                    incoming.refuse(f"{command.command}: no such job or task")
                    continue
                why = senders.manage_refusal(
                    self._settings, incoming.user_id, command.command, rows
                )
                if not senders.check(incoming, command.command, why):
                    continue
                if command.command == "kill":
                    outcome = kills.kill(conn, rows, command.reason, t)
                    log.info("kill of %d job(s): %s", len(rows), outcome)
                else:
                    started = retries.retry(conn, self._decide(rows), t, self._limits)
                    log.info("retry by hand: %d of %d job(s) started again", started, len(rows))

    def _decide(self, rows: list[RowMapping]) -> list[tuple[RowMapping, retries.Decision]]:
        """Only failed jobs are retried by hand; their error does not matter then."""
        return [
            (row, retries.decide(row, _failure_of(row), self._memory_factor, by_hand=True))
            for row in rows
            if row["state"] == JobState.FAILED
        ]


def _targets(conn: Connection, command: JobCommand) -> list[RowMapping]:
    ids = set(command.job_ids)
    if command.task_id:
        task_jobs = select(jobs.c.id).where(jobs.c.task_id == command.task_id)
        ids |= {r.id for r in conn.execute(task_jobs)}
    return [row for _, row in sorted(load(conn, ids, lock=True).items())]


def _failure_of(row: RowMapping) -> retries.Failure:
    family = row["error_family"]
    return retries.Failure(
        ErrorFamily(family).value if family else None, row["error_code"], row["exit_code"]
    )
