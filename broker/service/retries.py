"""Retries: a failed attempt with a retryable error becomes a new attempt.

The rules (PanDA's, in short): killed jobs, payloads that could not start and
payload exit codes marked final are not retried; neither is an attempt that
was the job's last (``max_attempts``), unless a person asks for it. A payload
that ran out of memory is retried with more memory. The new attempt keeps the
site of the old one and goes through ``defined → assigned → activated``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, RowMapping, bindparam, insert, update

from broker.error_codes import DDMError, ErrorFamily, PilotError, TaskBufferError
from broker.observability.logs import job_context
from broker.protocol import JobSpec
from broker.service.activation import Placement
from broker.service.setup import set_up
from broker.service.throttle import Limits
from broker.states import JobState
from broker.store.jobs import spec_of
from broker.store.keys import keys_in
from broker.store.schema import job_attempts, job_transitions, jobs
from broker.topology import resource_type

log = logging.getLogger(__name__)

#: Shell exit codes that say the command itself is wrong: retrying cannot help.
FINAL_EXIT_CODES = frozenset({126, 127})

_NEVER_RETRIED: dict[tuple[str | None, int | None], str] = {
    (ErrorFamily.TASKBUFFER, TaskBufferError.KILLED): "killed on request",
    (ErrorFamily.PILOT, PilotError.KILLED): "killed on request",
    (ErrorFamily.PILOT, PilotError.PAYLOAD_NOT_STARTED): "the payload could not be started",
    (ErrorFamily.DDM, DDMError.OUTPUT_NAME_TAKEN): "an output's name is taken: a retry "
    "would write the same name",
}


@dataclass(frozen=True)
class Failure:
    """Why an attempt failed."""

    family: str | None
    code: int | None
    exit_code: int | None = None


@dataclass(frozen=True)
class Decision:
    """Whether to retry, why, and the spec of the next attempt."""

    retry: bool
    why: str
    spec: JobSpec


def decide(
    row: RowMapping, failure: Failure, memory_factor: float, by_hand: bool = False
) -> Decision:
    """Apply the retry rules to a job whose current attempt just failed."""
    spec = spec_of(row)
    refusal = _refusal(spec, failure)
    if refusal is None and not by_hand and row["attempt"] >= row["max_attempts"]:
        refusal = f"attempt {row['attempt']} was the last of {row['max_attempts']}"
    if refusal is not None and not by_hand:
        return Decision(False, refusal, spec)
    if (failure.family, failure.code) == (ErrorFamily.PILOT, PilotError.OUT_OF_MEMORY):
        memory = math.ceil(spec.memory_mb * memory_factor)
        return Decision(
            True,
            f"retry with {memory} MB after running out of memory",
            dataclasses.replace(spec, memory_mb=memory),
        )
    return Decision(True, "retried by hand" if by_hand else "retryable failure", spec)


def _refusal(spec: JobSpec, failure: Failure) -> str | None:
    known = _NEVER_RETRIED.get((failure.family, failure.code))
    if known is not None:
        return known
    if failure.exit_code is not None and (
        failure.exit_code in FINAL_EXIT_CODES or failure.exit_code in spec.final_exit_codes
    ):
        return f"payload exit code {failure.exit_code} is final"
    return None


def retry(
    conn: Connection,
    decided: Iterable[tuple[RowMapping, Decision]],
    now: datetime,
    limits: Limits,
) -> int:
    """Start the next attempt of each job decided for (activated within the sites'
    ``limits``); how many started."""
    wanted = [(row, d) for row, d in decided if d.retry]
    if not wanted:
        return 0
    started = new_attempts(conn, wanted, now)
    placements = [
        Placement(
            d.spec,
            row["attempt"] + 1,
            row["site"],
            f"{d.why}; same site as attempt {row['attempt']}",
        )
        for row, d in wanted
        # A job never placed (no site) starts its next attempt `defined`, for brokerage.
        if row["id"] in started and row["site"] is not None
    ]
    set_up(conn, placements, now, limits)
    for p in placements:
        log.info(
            "job %s: attempt %d started (%s)",
            p.spec.id,
            p.attempt,
            p.why,
            extra=job_context(
                job_id=p.spec.id, attempt=p.attempt, task_id=p.spec.task_id, site=p.site
            ),
        )
    return len(placements)


def new_attempts(
    conn: Connection,
    wanted: list[tuple[RowMapping, Decision]],
    now: datetime,
    ended: JobState = JobState.FAILED,
) -> set[str]:
    """Move each job to its next attempt (``defined``), if it is still the ``ended``
    attempt we saw; the ids of those moved."""
    keys = [(row["id"], row["attempt"]) for row, _ in wanted]
    reset = {
        c: None
        for c in (
            "pilot_id",
            "exit_code",
            "error_family",
            "error_code",
            "diagnostic",
            "heartbeat_at",
            "kill_requested_at",
        )
    }
    stmt = (
        update(jobs)
        .where(keys_in(jobs.c.id, jobs.c.attempt, keys), jobs.c.state == ended.value)
        .values(attempt=jobs.c.attempt + 1, state=JobState.DEFINED.value, modified_at=now, **reset)
        .returning(jobs.c.id)
    )
    started = {r.id for r in conn.execute(stmt)}
    chosen = [(row, d) for row, d in wanted if row["id"] in started]
    if not chosen:
        return started
    conn.execute(
        update(jobs)
        .where(jobs.c.id == bindparam("b_id"))
        .values(spec=bindparam("b_spec"), resource_type=bindparam("b_rtype")),
        [
            {
                "b_id": row["id"],
                "b_spec": dataclasses.asdict(d.spec),
                "b_rtype": resource_type(d.spec.cores, d.spec.memory_mb),
            }
            for row, d in chosen
        ],
    )
    conn.execute(
        insert(job_attempts),
        [
            {
                "job_id": row["id"],
                "attempt": row["attempt"] + 1,
                "state": "defined",
                "created_at": now,
            }
            for row, _ in chosen
        ],
    )
    conn.execute(
        insert(job_transitions),
        [
            {
                "job_id": row["id"],
                "attempt": row["attempt"] + 1,
                "from_state": None,
                "to_state": "defined",
                "at": now,
                "reason": d.why,
            }
            for row, d in chosen
        ],
    )
    return started
