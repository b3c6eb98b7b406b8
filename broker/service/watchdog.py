"""The watchdog: jobs that stopped moving fail with a dispatcher error, and are
retried when the rules allow.

Safe with several broker processes: each takes the stalled rows it handles
with ``FOR UPDATE SKIP LOCKED`` (PostgreSQL), and every change is a
compare-and-set on the state the watchdog saw.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, RowMapping, func, select

from broker.error_codes import DispatcherError, ErrorFamily
from broker.observability.logs import job_context
from broker.operations import retries
from broker.operations.throttle import Limits
from broker.settings import Settings
from broker.states import JobState
from broker.store import transitions
from broker.store.clock import as_utc, now
from broker.store.engine import transaction
from broker.store.schema import jobs
from broker.store.transitions import Change

log = logging.getLogger(__name__)

S = JobState

#: How many stalled jobs one pass handles per rule (the rest wait for the next pass).
BATCH = 1000


@dataclass(frozen=True)
class Rule:
    """Jobs in ``states`` whose clock is older than the timeout fail with ``code``."""

    states: tuple[JobState, ...]
    timeout_setting: str
    code: DispatcherError
    what: str
    by_heartbeat: bool = False


RULES = (
    Rule(
        (S.STARTING, S.RUNNING),
        "lost_heartbeat_s",
        DispatcherError.LOST_HEARTBEAT,
        "no heartbeat from pilot {pilot} for {age}",
        by_heartbeat=True,
    ),
    Rule(
        (S.SENT,),
        "sent_timeout_s",
        DispatcherError.SENT_TIMEOUT,
        "pilot {pilot} claimed the job but sent nothing for {age}",
    ),
    Rule(
        (S.HOLDING,), "holding_timeout_s", DispatcherError.HOLDING_TIMEOUT, "in holding for {age}"
    ),
    Rule(
        (S.TRANSFERRING,),
        "transferring_timeout_s",
        DispatcherError.TRANSFERRING_TIMEOUT,
        "outputs not transferred after {age}",
    ),
    Rule(
        (S.ASSIGNED,),
        "assigned_timeout_s",
        DispatcherError.ASSIGNED_TIMEOUT,
        "input data not at site {site} after {age}",
    ),
)


class Watchdog:
    """Fails stalled jobs; ``check`` is called periodically by the broker service."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self._engine = engine
        self._settings = settings
        #: Lost heartbeats are not judged before this time (pilots reconnecting).
        self._heartbeats_judged_from: datetime | None = None

    def after_outage(self, at: datetime | None = None) -> None:
        """The service is connected again after an outage: give pilots one heartbeat
        interval from ``at`` to reconnect and heartbeat before judging heartbeats."""
        grace = timedelta(seconds=self._settings.heartbeat_interval_s)
        self._heartbeats_judged_from = (at or now()) + grace
        log.info(
            "lost heartbeats judged again from %s, a heartbeat interval after the outage",
            self._heartbeats_judged_from.isoformat(timespec="seconds"),
        )

    def check(self, at: datetime | None = None) -> int:
        """One pass over every rule; how many jobs failed."""
        t = at or now()
        failed = 0
        with transaction(self._engine) as conn:
            for rule in RULES:
                failed += self._apply(conn, rule, t)
        return failed

    def _apply(self, conn: Connection, rule: Rule, t: datetime) -> int:
        if rule.by_heartbeat and self._in_grace(t):
            # The outage kept heartbeats from arriving; it is no pilot's fault.
            return 0
        timeout = float(getattr(self._settings, rule.timeout_setting))
        rows = _stalled(conn, rule, t - timedelta(seconds=timeout))
        if not rows:
            return 0
        changes = [_fail(row, rule, t) for row in rows]
        applied = {c.job_id for c in transitions.apply(conn, changes, t)}
        policy = retries.Policy.of(self._settings)
        failed = [
            (r, _failure(rule, c)) for r, c in zip(rows, changes, strict=True) if r["id"] in applied
        ]
        decided = retries.decide_all(conn, failed, policy)
        retries.retry(conn, decided, t, Limits.of(self._settings), policy)
        for change in changes:
            if change.job_id in applied:
                log.warning(
                    "job %s failed: %s",
                    change.job_id,
                    change.reason,
                    extra=job_context(job_id=change.job_id, attempt=change.attempt),
                )
        return len(applied)

    def _in_grace(self, t: datetime) -> bool:
        """Whether pilots still have time to come back after an outage."""
        return self._heartbeats_judged_from is not None and t < self._heartbeats_judged_from


def _stalled(conn: Connection, rule: Rule, cutoff: datetime) -> list[RowMapping]:
    clock = (
        func.coalesce(jobs.c.heartbeat_at, jobs.c.modified_at)
        if rule.by_heartbeat
        else jobs.c.modified_at
    )
    stmt = (
        select(jobs)
        .where(jobs.c.state.in_([s.value for s in rule.states]), clock < cutoff)
        .order_by(jobs.c.id)
        .limit(BATCH)
    )
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    return list(conn.execute(stmt).mappings())


def _failure(rule: Rule, change: Change) -> retries.Failure:
    return retries.Failure(
        ErrorFamily.DISPATCHER.value, int(rule.code), diagnostic=change.values["diagnostic"]
    )


def _fail(row: RowMapping, rule: Rule, t: datetime) -> Change:
    since = row["heartbeat_at"] if rule.by_heartbeat and row["heartbeat_at"] else row["modified_at"]
    age = f"{(t - as_utc(since)).total_seconds():.0f} s"
    text = rule.what.format(pilot=row["pilot_id"], site=row["site"], age=age)
    return Change(
        row["id"],
        row["attempt"],
        JobState(row["state"]),
        S.FAILED,
        reason=text,
        values={
            "error_family": ErrorFamily.DISPATCHER.value,
            "error_code": int(rule.code),
            "diagnostic": text,
        },
    )
