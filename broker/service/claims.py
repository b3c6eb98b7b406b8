"""Answer pilots' claims: a compare-and-set ``activated → sent`` in SQL.

A job is granted to at most one pilot per attempt. A pilot that repeats its
claim (its reply was lost, or the broker crashed before acking) is granted the
same job again; every other claim on a job that is no longer ``activated`` is
refused with the reason.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import Connection, Engine, RowMapping, func, insert, select, update
from sqlalchemy.sql.expression import bindparam

from broker import topology
from broker.messaging.consumer import Incoming
from broker.messaging.publisher import Outgoing, Publisher
from broker.metrics import CLAIMS
from broker.protocol import ClaimReply, ClaimRequest, encode
from broker.states import JobState
from broker.store import transitions
from broker.store.clock import now
from broker.store.engine import transaction
from broker.store.jobs import load, spec_of
from broker.store.schema import pilots
from broker.store.transitions import Change

log = logging.getLogger(__name__)

CLAIMED_BY_ANOTHER = "job was claimed by another pilot"


class ClaimHandler:
    """Handles batches from ``pandamq.claims``: one transaction, then the replies."""

    def __init__(self, engine: Engine, publisher: Publisher) -> None:
        self._engine = engine
        self._publisher = publisher

    def __call__(self, batch: list[Incoming[ClaimRequest]]) -> None:
        """Grant or refuse each claim; reply to each pilot."""
        t = now()
        requests = [i.message for i in batch]
        with transaction(self._engine) as conn:
            rows = load(conn, (r.job_id for r in requests), lock=True)
            changes = _claim_changes(requests, rows, t)
            won = {c.job_id: c.values["pilot_id"] for c in transitions.apply(conn, changes, t)}
            replies = [_reply(r, rows.get(r.job_id), won) for r in requests]
            _see_pilots(conn, requests, replies, t)
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
    return None


def _reply(request: ClaimRequest, row: RowMapping | None, won: dict[str, str]) -> ClaimReply:
    """Granted to the pilot whose claim won now, or that already holds the job."""
    refusal = _refusal(request, row)
    if refusal is None and row is not None:
        holder = won.get(request.job_id)
        if holder is None and row["state"] == JobState.SENT:
            holder = row["pilot_id"]
        if holder == request.pilot_id:
            return ClaimReply(request.job_id, request.attempt, True, job=spec_of(row))
    return ClaimReply(request.job_id, request.attempt, False, reason=refusal or CLAIMED_BY_ANOTHER)


def _see_pilots(
    conn: Connection, requests: list[ClaimRequest], replies: list[ClaimReply], t: datetime
) -> None:
    """Record each claiming pilot (first and last seen, slot, jobs granted)."""
    latest = {r.pilot_id: r for r in requests}
    known = {row.id for row in conn.execute(select(pilots.c.id).where(pilots.c.id.in_(latest)))}
    new = [r for pid, r in latest.items() if pid not in known]
    if new:
        conn.execute(
            insert(pilots),
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
