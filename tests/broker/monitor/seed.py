"""Failed attempts written straight into SQL, as the broker would leave them."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import Connection, insert

from broker.store.clock import now
from broker.store.schema import job_attempts, jobs
from broker.store.sites import add_site


def new_site(conn: Connection) -> str:
    """A site of this test's own."""
    name = f"SEED_{uuid.uuid4().hex[:8].upper()}"
    add_site(conn, name)
    return name


def failed_job(
    conn: Connection,
    site: str,
    code: int,
    diagnostic: str,
    exit_code: int | None = None,
    family: str = "pilot",
    ago: timedelta = timedelta(minutes=5),
) -> str:
    """A job whose only attempt failed ``ago``; its id."""
    job_id = f"seed-{uuid.uuid4().hex[:12]}"
    ended: datetime = now() - ago
    failure = {
        "exit_code": exit_code,
        "error_family": family,
        "error_code": code,
        "diagnostic": diagnostic,
    }
    conn.execute(
        insert(jobs).values(
            id=job_id,
            site=site,
            resource_type="SCORE",
            state="failed",
            attempt=1,
            priority=0,
            max_attempts=1,
            spec={"command": "true", "id": job_id},
            created_at=ended,
            modified_at=ended,
            **failure,
        )
    )
    conn.execute(
        insert(job_attempts).values(
            job_id=job_id,
            attempt=1,
            site=site,
            state="failed",
            created_at=ended,
            ended_at=ended,
            **failure,
        )
    )
    return job_id
