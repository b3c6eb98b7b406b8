"""Put jobs into a given state directly in SQL, for handler and watchdog tests."""

from __future__ import annotations

import itertools
import uuid
from datetime import datetime

from sqlalchemy import Engine, RowMapping, update

from broker.protocol import JobSpec
from broker.states import JobState
from broker.store import transitions
from broker.store.clock import now
from broker.store.engine import transaction
from broker.store.jobs import insert_defined, load
from broker.store.schema import jobs
from broker.store.sites import add_site
from broker.store.transitions import Change

S = JobState
PILOT = "pilot-1"
SITE = "TEST_SITE"
#: The user that submits these jobs.
OWNER = "user.alice"

#: The way a job goes, up to each state.
LIFE = [S.DEFINED, S.ASSIGNED, S.ACTIVATED, S.SENT, S.STARTING, S.RUNNING, S.HOLDING]


def jobs_in(
    engine: Engine,
    state: JobState,
    count: int = 1,
    at: datetime | None = None,
    site: str = SITE,
    **spec: object,
) -> list[str]:
    """New jobs moved along the life up to ``state`` at ``site``, last changed at ``at``."""
    ids = [uuid.uuid4().hex for _ in range(count)]
    path = LIFE[: LIFE.index(state) + 1] if state in LIFE else [*LIFE, state]
    with transaction(engine) as conn:
        add_site(conn, site)
        specs = [JobSpec(command="true", id=i, **spec) for i in ids]
        insert_defined(conn, specs, now(), dict.fromkeys(ids, OWNER))
        changes = [
            Change(i, 1, a, b, values={"site": site, "pilot_id": PILOT})
            for i in ids
            for a, b in itertools.pairwise(path)
        ]
        transitions.apply(conn, changes, at or now())
        conn.execute(update(jobs).where(jobs.c.id.in_(ids)).values(modified_at=at or now()))
    return ids


def row(engine: Engine, job_id: str) -> RowMapping:
    """The job's row now."""
    with transaction(engine) as conn:
        return load(conn, [job_id])[job_id]


#: The ways to a throttled and to a running job, for jobs of one user (``put``).
TO_THROTTLED = [S.DEFINED, S.ASSIGNED, S.THROTTLED]
TO_RUNNING = [S.DEFINED, S.ASSIGNED, S.ACTIVATED, S.SENT, S.STARTING, S.RUNNING]


def a_user() -> str:
    """A user no other test has (the PostgreSQL database is shared by the session)."""
    return f"user.{uuid.uuid4().hex[:8]}"


def a_site(engine: Engine) -> str:
    name = f"SITE_{uuid.uuid4().hex[:8].upper()}"
    with transaction(engine) as conn:
        add_site(conn, name)
    return name


def put(
    engine: Engine, owner: str, site: str, path: list[JobState], priorities: list[int]
) -> list[str]:
    """Jobs of ``owner`` at ``site`` with those submitted priorities, moved along ``path``."""
    prefix = uuid.uuid4().hex[:8]
    ids = [f"{prefix}-{n:03d}" for n in range(len(priorities))]
    with transaction(engine) as conn:
        specs = [
            JobSpec(command="true", id=i, priority=p) for i, p in zip(ids, priorities, strict=True)
        ]
        insert_defined(conn, specs, now(), dict.fromkeys(ids, owner))
        changes = [
            Change(i, 1, a, b, values={"site": site})
            for i in ids
            for a, b in itertools.pairwise(path)
        ]
        transitions.apply(conn, changes, now())
    return ids
