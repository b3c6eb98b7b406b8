"""New jobs stored once, in the state their first transaction leaves them in.

Brokerage places each new job, and what follows is worked out in memory: a
job that no site fits fails with the brokerage error; a placed job naming an
input file that is not registered fails with a DDM error; one whose inputs
are not all at its site stays ``assigned`` (the DDM bridge brings them); the
others are ``activated`` as far as their site's cap allows and ``throttled``
beyond it. Each job is then inserted in that state, with one history row per
move (``defined``, ``assigned``, ...), and each activated job's dispatch goes
into the outbox: the rows that ``settle`` leaves when it moves jobs already
written, one step at a time, but each job row written once instead of three
times. Retries and rebrokered jobs, which exist already, go through
``settle``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import Connection

from broker.operations import throttle
from broker.operations.activation import NOTHING_TO_WAIT_FOR, Placement, dispatch
from broker.operations.brokerage import Brokerage, Unplaced, failed_brokerage
from broker.operations.fairshare import new_priorities
from broker.operations.inputs import Standing, inputs_at
from broker.operations.setup import AT_SITE, unregistered, waiting_for_inputs
from broker.operations.throttle import Limits, Row
from broker.protocol import JobSpec
from broker.states import JobState
from broker.store import outbox
from broker.store.job_files import add_inputs
from broker.store.jobs import NewJob, insert_new
from broker.topology import resource_type

log = logging.getLogger(__name__)

S = JobState


def store_jobs(
    conn: Connection,
    brokerage: Brokerage,
    specs: Sequence[JobSpec],
    owners: Mapping[str, str | None],
    now: datetime,
    limits: Limits,
) -> tuple[list[Placement], list[Unplaced]]:
    """Place, and insert in the state they reach, new jobs (``owners`` by job id) within
    the sites' ``limits``; (placed, unplaced), as ``Brokerage.place``."""
    placed, unplaced = brokerage.place(specs, owners=owners)
    priorities = new_priorities(conn, specs, owners, limits.priority_step)
    failed = [_failed(u, owners.get(u.spec.id)) for u in unplaced]
    assigned = [_assigned(p, owners.get(p.spec.id), priorities[p.spec.id]) for p in placed]
    known = brokerage.file_ids()
    ready = _check_inputs(assigned, placed, brokerage)
    go = _activate(conn, ready, limits)
    insert_new(conn, failed + assigned, now)
    add_inputs(conn, [(p.spec.id, 1, p.spec.input_files) for p in placed], known)
    outbox.put(conn, [dispatch(row) for row in go])
    return placed, unplaced


def _failed(unplaced: Unplaced, owner: str | None) -> NewJob:
    job = NewJob(unplaced.spec, owner)
    job.move(S.FAILED, unplaced.decision.why, unplaced.failure())
    failed_brokerage(job.spec.id, unplaced.decision.why)
    return job


def _assigned(placement: Placement, owner: str | None, priority: int) -> NewJob:
    job = NewJob(placement.spec, owner, priority=priority)
    job.move(S.ASSIGNED, placement.why, placement.values())
    return job


def _check_inputs(
    assigned: list[NewJob],
    placed: list[Placement],
    brokerage: Brokerage,
) -> list[tuple[NewJob, Placement, str]]:
    """Fail the jobs naming unregistered inputs, leave ``assigned`` those whose inputs
    are not all at their site; the others, with why they may be activated."""
    ready, waiting = [], 0
    found = brokerage.files()
    for job, p in zip(assigned, placed, strict=True):
        dids = p.spec.input_files
        inputs = inputs_at(p.site, dids, found)
        if inputs.standing == Standing.UNKNOWN:
            job.move(S.FAILED, *unregistered(job.spec.id, inputs.unknown))
        elif inputs.standing == Standing.MISSING:
            waiting += 1
        else:
            ready.append((job, p, AT_SITE if dids else NOTHING_TO_WAIT_FOR))
    waiting_for_inputs(waiting)
    return ready


def _activate(
    conn: Connection, ready: list[tuple[NewJob, Placement, str]], limits: Limits
) -> list[Row]:
    """Move the ready jobs to ``activated`` as far as their sites' caps allow, the others
    to ``throttled``; the rows of those activated (for their dispatch)."""
    rows = [_row(job, p) for job, p, _ in ready]
    go, wait = throttle.split(conn, rows, limits)
    activated = {row["id"] for row in go}
    for job, _, why in ready:
        if job.spec.id in activated:
            job.move(S.ACTIVATED, why)
        else:
            job.move(S.THROTTLED, wait[job.spec.id])
    return go


def _row(job: NewJob, p: Placement) -> Row:
    """A placed new job as throttling and its dispatch read it."""
    spec = p.spec
    return {
        "id": spec.id,
        "attempt": p.attempt,
        "site": p.site,
        "resource_type": resource_type(spec.cores, spec.memory_mb),
        "priority": spec.priority if job.priority is None else job.priority,
        "activity": spec.activity,
        "owner": job.owner,
    }
