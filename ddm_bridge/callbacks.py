"""What a subscription's end does to its jobs: completion activates every job
waiting on it for inputs (in bulk) and finishes every job whose outputs it
shipped; failure or timeout fails them with a DDM error, and they are
retried when the rules allow. Activations and retries keep to the sites' caps
(``Limits.of(settings)``), like every other path that activates jobs."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import Connection

from broker.error_codes import DDMError, ErrorFamily
from broker.operations import inputs, retries
from broker.operations.activation import JobRef, activate
from broker.operations.inputs import Standing
from broker.operations.throttle import Limits
from broker.states import JobState
from broker.store import job_files, transitions
from broker.store.jobs import load
from broker.store.transitions import Change
from ddm_bridge.dispatch import COMPLETE

log = logging.getLogger(__name__)


def completed(conn: Connection, dataset: str, now: datetime, limits: Limits) -> int:
    """Activate the jobs that waited on ``dataset`` and now have every input, and
    finish those whose outputs it shipped; how many moved. Activation keeps to
    the sites' ``limits``."""
    waiting = job_files.jobs_waiting_on(conn, dataset)
    assigned = [(j, a) for j, a, state in waiting if state == JobState.ASSIGNED]
    stand = inputs.of_jobs(conn, (job_id for job_id, _ in assigned))
    ready = [
        JobRef(job_id, attempt)
        for job_id, attempt in assigned
        if stand[job_id].standing == Standing.PRESENT
    ]
    activated = activate(conn, ready, now, limits, f"{COMPLETE} ({dataset} complete)")
    shipped = [
        Change(
            job_id,
            attempt,
            JobState.TRANSFERRING,
            JobState.FINISHED,
            reason=f"outputs at their destination ({dataset} complete)",
        )
        for job_id, attempt, state in waiting
        if state == JobState.TRANSFERRING
    ]
    finished = len(transitions.apply(conn, shipped, now))
    log.info("%s complete: %d job(s) activated, %d finished", dataset, activated, finished)
    return activated + finished


def failed(
    conn: Connection,
    dataset: str,
    code: DDMError,
    error: str,
    policy: retries.Policy,
    now: datetime,
    limits: Limits,
) -> int:
    """Fail the jobs waiting on ``dataset`` with a DDM error, then retry them (activated
    within the sites' ``limits``); how many failed."""
    waiting = job_files.jobs_waiting_on(conn, dataset)
    rows = load(conn, (job_id for job_id, _, _ in waiting), lock=True)
    text = f"subscription of {dataset} failed: {error}"
    values = {"error_family": ErrorFamily.DDM.value, "error_code": int(code), "diagnostic": text}
    changes = [
        Change(job_id, attempt, state, JobState.FAILED, reason=text, values=values)
        for job_id, attempt, state in waiting
    ]
    applied = {c.job_id for c in transitions.apply(conn, changes, now)}
    failure = retries.Failure(ErrorFamily.DDM.value, int(code), diagnostic=text)
    decided = retries.decide_all(conn, [(rows[j], failure) for j in applied if j in rows], policy)
    retries.retry(conn, decided, now, limits, policy)
    log.warning("%s: %d job(s) failed: %s", dataset, len(applied), error)
    return len(applied)
