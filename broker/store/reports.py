"""What pilots reported of attempts that ended with files, kept until the DDM bridge
has dealt with them (PanDA's Adder): it registers the files of a job ``holding``
and moves the job on, or removes what an attempt that is over staged.

The event handler writes a report in the transaction that records the pilot's
event; the bridge takes reports under a hold (``ddm_bridge.holding``) and
deletes each in the transaction that acts on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import Connection, delete, insert, select

from broker.protocol import JobEvent, decode_body, encode
from broker.store.keys import keys_in
from broker.store.schema import reported_outputs


def record(conn: Connection, events: Sequence[JobEvent], now: datetime) -> int:
    """Keep the report of each event's attempt (one per attempt: a later one of an attempt
    reported already, or a second one in ``events``, is dropped); how many were new."""
    wanted = {(e.job_id, e.attempt): e for e in reversed(events)}
    if not wanted:
        return 0
    known = select(reported_outputs.c.job_id, reported_outputs.c.attempt).where(
        keys_in(reported_outputs.c.job_id, reported_outputs.c.attempt, wanted)
    )
    for row in conn.execute(known):
        wanted.pop((row.job_id, row.attempt), None)
    if wanted:
        conn.execute(
            insert(reported_outputs),
            [
                {"job_id": j, "attempt": a, "event": encode(e).decode(), "reported_at": now}
                for (j, a), e in wanted.items()
            ],
        )
    return len(wanted)


def parse(body: str) -> JobEvent:
    """The event a stored report holds."""
    return decode_body(JobEvent, body)


def remove(conn: Connection, keys: Iterable[tuple[str, int]]) -> None:
    """Delete the reports of these attempts (dealt with)."""
    wanted = set(keys)
    if wanted:
        conn.execute(
            delete(reported_outputs).where(
                keys_in(reported_outputs.c.job_id, reported_outputs.c.attempt, wanted)
            )
        )
