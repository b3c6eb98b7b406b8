"""Answer pilots' claims: a compare-and-set ``activated → sent`` in SQL.

A job is granted to at most one pilot per attempt. A pilot that repeats its
claim (its reply was lost, or the broker crashed before acking) is granted the
same job again; every other claim on a job that is no longer ``activated`` is
refused with the reason.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, RowMapping, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.expression import bindparam

from broker import topology
from broker.messaging.consumer import Incoming
from broker.messaging.publisher import Outgoing, Publisher
from broker.metrics import CLAIMS
from broker.observability.logs import job_context
from broker.operations.activation import dispatch, release
from broker.operations.throttle import Limits
from broker.protocol import SLOT_TOO_SMALL, ClaimReply, ClaimRequest, encode
from broker.scopes import output_scope
from broker.security import senders
from broker.settings import Settings
from broker.states import JobState
from broker.store import outbox, transitions
from broker.store.clock import now
from broker.store.engine import transaction
from broker.store.job_files import input_infos
from broker.store.jobs import load, spec_of
from broker.store.schema import pilots
from broker.store.transitions import Change

log = logging.getLogger(__name__)

CLAIMED_BY_ANOTHER = "job was claimed by another pilot"


class ClaimHandler:
    """Handles batches from ``pandamq.claims``: one transaction, then the replies."""

    def __init__(self, engine: Engine, publisher: Publisher, settings: Settings) -> None:
        self._engine = engine
        self._publisher = publisher
        self._limits = Limits.of(settings)
        self._rse_of = settings.rse_of

    def __call__(self, batch: list[Incoming[ClaimRequest]]) -> None:
        """Grant or refuse each claim; reply to each pilot."""
        t = now()
        with transaction(self._engine) as conn:
            rows = load(conn, (i.message.job_id for i in batch), lock=True)
            claimable = senders.allowed(batch, "claim", lambda i: senders.claim_refusal(i, rows))
            requests = [i.message for i in claimable]
            changes = _claim_changes(requests, rows, t)
            won = {c.job_id: c.values["pilot_id"] for c in transitions.apply(conn, changes, t)}
            granted = [_reply(r, rows.get(r.job_id), won) for r in requests]
            replies = _with_inputs(conn, granted, self._rse_of)
            _see_pilots(conn, requests, replies, t)
            outbox.put(conn, _dispatch_again(requests, rows, won))
            release(conn, t, self._limits, {rows[j]["site"] for j in won})
        self._publisher.publish(
            Outgoing(
                topology.REPLIES_EXCHANGE,
                r.reply_to,
                encode(reply),
                persistent=False,
                mandatory=False,
            )
            for r, reply in zip(requests, replies, strict=True)
        )
        for request, reply in zip(requests, replies, strict=True):
            CLAIMS.labels(result="granted" if reply.granted else "refused").inc()
            if not reply.granted:
                log.info(
                    "refused claim of job %s by pilot %s: %s",
                    request.job_id,
                    request.pilot_id,
                    reply.reason,
                    extra=job_context(
                        job_id=request.job_id, pilot_id=request.pilot_id, site=request.site
                    ),
                )


def _claim_changes(
    requests: list[ClaimRequest], rows: dict[str, RowMapping], t: datetime
) -> list[Change]:
    """One ``activated → sent`` candidate per job: the first valid claim in the batch."""
    changes: dict[str, Change] = {}
    for r in requests:
        row = rows.get(r.job_id)
        if row is None or r.job_id in changes or _refusal(r, row):
            continue
        if row["state"] == JobState.ACTIVATED:
            changes[r.job_id] = Change(
                r.job_id,
                r.attempt,
                JobState.ACTIVATED,
                JobState.SENT,
                reason=f"claimed by pilot {r.pilot_id}",
                values={"pilot_id": r.pilot_id},
            )
    return list(changes.values())


def _refusal(request: ClaimRequest, row: RowMapping | None) -> str | None:
    """Why this claim cannot be granted whatever else happens, or None."""
    if row is None:
        return "unknown job"
    if request.attempt != row["attempt"]:
        return f"attempt {request.attempt} is superseded by attempt {row['attempt']}"
    if request.site != row["site"]:
        return f"job belongs to site {row['site']}, not {request.site}"
    if row["state"] not in (JobState.ACTIVATED, JobState.SENT):
        return f"job is {row['state']}"
    return slot_misfit(request, row["spec"])


def slot_misfit(request: ClaimRequest, spec: Mapping[str, Any]) -> str | None:
    """Why the claiming pilot's slot is too small for the job, or None if it fits."""
    needs = (spec["cores"], spec["memory_mb"], spec["walltime_s"])
    has = (request.cores, request.memory_mb, request.walltime_s or needs[2])
    if all(n <= h for n, h in zip(needs, has, strict=True)):
        return None
    return (
        f"{SLOT_TOO_SMALL}: the job needs {needs[0]} cores, {needs[1]} MB, {needs[2]} s;"
        f" the slot has {has[0]} cores, {has[1]} MB, {has[2]} s"
    )


def _dispatch_again(
    requests: list[ClaimRequest], rows: dict[str, RowMapping], won: dict[str, str]
) -> list[Outgoing]:
    """A job refused to a slot too small for it goes back to its queue for another pilot."""
    again = {}
    for r in requests:
        row = rows.get(r.job_id)
        if row is not None and r.job_id not in won and row["state"] == JobState.ACTIVATED:
            refusal = _refusal(r, row)
            if refusal is not None and refusal.startswith(SLOT_TOO_SMALL):
                again[r.job_id] = dispatch(row)
    return list(again.values())


def _reply(request: ClaimRequest, row: RowMapping | None, won: dict[str, str]) -> ClaimReply:
    """Granted to the pilot whose claim won now, or that already holds the job."""
    refusal = _refusal(request, row)
    if refusal is None and row is not None:
        holder = won.get(request.job_id)
        if holder is None and row["state"] == JobState.SENT:
            holder = row["pilot_id"]
        if holder == request.pilot_id:
            scope = output_scope(row["owner"])
            return ClaimReply(
                request.job_id, request.attempt, True, job=spec_of(row), output_scope=scope
            )
    return ClaimReply(request.job_id, request.attempt, False, reason=refusal or CLAIMED_BY_ANOTHER)


def _with_inputs(
    conn: Connection, replies: list[ClaimReply], rse_of: Callable[[str], str]
) -> list[ClaimReply]:
    """Granted replies carry the job's input files, for the pilot to stage in and verify,
    each naming the replica at the job's site (its storage element, ``rse_of``, and path)."""
    jobs = (r.job_id for r in replies if r.job and r.job.input_files)
    inputs = input_infos(conn, jobs, rse_of)
    return [
        dataclasses.replace(r, input_files=inputs[r.job_id]) if r.job_id in inputs and r.job else r
        for r in replies
    ]


def _see_pilots(
    conn: Connection, requests: list[ClaimRequest], replies: list[ClaimReply], t: datetime
) -> None:
    """Record each claiming pilot (first and last seen, slot, jobs granted)."""
    if not requests:
        return
    latest = {r.pilot_id: r for r in requests}
    known = {row.id for row in conn.execute(select(pilots.c.id).where(pilots.c.id.in_(latest)))}
    new = [r for pid, r in latest.items() if pid not in known]
    if new:
        # Another broker process may be recording the same new pilot (its claims to two
        # sites' queues, in two batches): its row is kept, and counted on below.
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        conn.execute(
            dialect.insert(pilots).on_conflict_do_nothing(index_elements=[pilots.c.id]),
            [
                {
                    "id": r.pilot_id,
                    "site": r.site,
                    "node": r.node,
                    "cores": r.cores,
                    "memory_mb": r.memory_mb,
                    "first_seen": t,
                    "last_seen": t,
                    "jobs_claimed": 0,
                }
                for r in new
            ],
        )
    counts = dict.fromkeys(latest, 0)
    for r, reply in zip(requests, replies, strict=True):
        counts[r.pilot_id] += int(reply.granted)
    conn.execute(
        update(pilots)
        .where(pilots.c.id == bindparam("b_id"))
        .values(
            first_seen=func.coalesce(pilots.c.first_seen, t),
            last_seen=t,
            jobs_claimed=pilots.c.jobs_claimed + bindparam("b_n"),
        ),
        [{"b_id": pid, "b_n": n} for pid, n in counts.items()],
    )
