"""PanDA's Adder: the bridge registers what the jobs ``holding`` wrote, and moves them on.

The event handler leaves a job whose pilot reported files ``holding``, with the
report kept (``broker.store.reports``). A pass takes a batch of reports under a
hold (``ddm_bridge.holding``), so that two bridges never take the same one;
then, in one transaction, registers the files of the jobs still ``holding``
with that attempt through the backend (``ddm_bridge.outputs``), moves each job
to the state its pilot reported (``finished``, ``failed``; ``failed`` with a
DDM error when its files were refused; ``transferring`` when its outputs must
reach a destination), retries the failed ones as the rules allow, records
what each attempt used and reviews its task's scouting and tuning, has what
attempts that are over staged removed, and deletes the reports.

A bridge that dies after the backend kept the files and before that
transaction committed leaves the reports held until the hold runs out; the
bridge that takes them then has the backend keep the files again, which it
does harmlessly (docs/reliability.md).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, RowMapping, select

from broker.operations import retries
from broker.operations.scouting import Scouting
from broker.operations.throttle import Limits
from broker.protocol import JobEvent
from broker.settings import Settings
from broker.states import JobState
from broker.store import reports, transitions
from broker.store.engine import transaction
from broker.store.jobs import load
from broker.store.keys import keys_in
from broker.store.schema import job_attempts
from broker.store.transitions import Change
from ddm_bridge import holding, outputs
from ddm_bridge.backend import DDMBackend

log = logging.getLogger(__name__)

#: Reports taken per pass.
BATCH = 500


class Adder:
    """Registers the outputs of holding jobs for one bridge (``holder``)."""

    def __init__(
        self, settings: Settings, engine: Engine, backend: DDMBackend, holder: str
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._backend = backend
        self._holder = holder
        self._limits = Limits.of(settings)
        self._policy = retries.Policy.of(settings)
        self._scouting = Scouting(settings)

    def step(self, t: datetime) -> int:
        """One pass; how many reports were dealt with."""
        hold = timedelta(seconds=self._settings.lease_s)
        with transaction(self._engine) as conn:
            events = holding.take_reports(conn, self._holder, t, t + hold, BATCH)
        if not events:
            return 0
        with transaction(self._engine) as conn:
            rows = load(conn, (e.job_id for e in events), lock=True)
            live = [e for e in events if _holding(e, rows.get(e.job_id))]
            self._discard(conn, [e for e in events if e not in live])
            self._move_on(conn, live, rows, t)
            reports.remove(conn, ((e.job_id, e.attempt) for e in events))
        return len(events)

    def _move_on(
        self, conn: Connection, events: list[JobEvent], rows: dict[str, RowMapping], t: datetime
    ) -> None:
        """Register the files of holding jobs and move the jobs on; retry the failed ones."""
        if not events:
            return
        after = outputs.register(conn, events, rows, self._backend, t)
        changes = [_change(e, after[e.job_id]) for e in events]
        moved = {c.job_id for c in transitions.apply(conn, changes, t)}
        failed: list[tuple[RowMapping, retries.Failure]] = []
        for job_id, then in after.items():
            if job_id in moved and then.failure is not None:
                failed.append((rows[job_id], then.failure))
        decided = retries.decide_all(conn, failed, self._policy)
        retries.retry(conn, decided, t, self._limits, self._policy)
        self._scouting.after_events(conn, [e for e in events if e.job_id in moved], rows, t)
        log.info("registered the outputs of %d job(s)", len(moved))

    def _discard(self, conn: Connection, events: list[JobEvent]) -> None:
        """Have what attempts that are over (superseded, killed) staged removed."""
        if not events:
            return
        keys = {(e.job_id, e.attempt) for e in events}
        stmt = select(job_attempts.c.job_id, job_attempts.c.attempt, job_attempts.c.site).where(
            keys_in(job_attempts.c.job_id, job_attempts.c.attempt, keys)
        )
        for row in conn.execute(stmt):
            if row.site is not None:
                self._backend.discard_outputs(row.site, row.job_id, row.attempt)
        log.info("removed what %d attempt(s) that are over staged", len(events))


def _change(event: JobEvent, then: outputs.AfterHolding) -> Change:
    return Change(
        event.job_id,
        event.attempt,
        JobState.HOLDING,
        then.target,
        reason=then.reason,
        values=then.values,
    )


def _holding(event: JobEvent, row: RowMapping | None) -> bool:
    """Whether the event's attempt is its job's, and the job waits in ``holding``."""
    return (
        row is not None
        and row["attempt"] == event.attempt
        and JobState(row["state"]) == JobState.HOLDING
    )
