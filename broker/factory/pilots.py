"""The factory's records in SQL: the work a site has queued, and each pilot it submitted."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, insert, select, update

from broker.factory.submitter import LIVE_STATES, BatchStatus, PilotState, SlotShape
from broker.states import JobState
from broker.store.schema import jobs, pilots

#: Pilot states that say the pilot died (rather than left when its work was done).
DIED = (PilotState.FAILED, PilotState.MISSED)
#: Pilot states that say the pilot has started (if the factory did not see it running).
RAN = (PilotState.RUNNING, PilotState.FINISHED, PilotState.FAILED)


@dataclass(frozen=True)
class Work:
    """A site's activated jobs of one resource type, and the largest shape among them."""

    jobs: int
    cores: int
    memory_mb: int
    walltime_s: int


def queued_work(conn: Connection, site: str) -> dict[str, Work]:
    """Activated jobs of ``site`` per resource type."""
    rows = conn.execute(
        select(jobs.c.resource_type, jobs.c.spec).where(
            jobs.c.site == site, jobs.c.state == JobState.ACTIVATED
        )
    )
    work: dict[str, Work] = {}
    for resource, spec in rows:
        seen = work.get(resource, Work(0, 1, 1, 1))
        work[resource] = Work(
            seen.jobs + 1,
            max(seen.cores, int(spec.get("cores", 1))),
            max(seen.memory_mb, int(spec.get("memory_mb", 1))),
            max(seen.walltime_s, int(spec.get("walltime_s", 1))),
        )
    return work


@dataclass(frozen=True)
class LivePilot:
    """A pilot that has not ended, as the factory last saw it."""

    id: str
    batch_id: str | None
    resource_type: str
    state: str


def live_pilots(conn: Connection, site: str, batch_system: str) -> list[LivePilot]:
    """The site's pilots in ``batch_system`` that have not ended."""
    query = select(pilots.c.id, pilots.c.batch_id, pilots.c.resource_type, pilots.c.state).where(
        pilots.c.site == site,
        pilots.c.batch_system == batch_system,
        pilots.c.state.in_([str(s) for s in LIVE_STATES]),
    )
    return [LivePilot(*row) for row in conn.execute(query)]


def record_submitted(
    conn: Connection, shape: SlotShape, batch_system: str, pilot_ids: Sequence[str], t: datetime
) -> None:
    """One row per pilot about to be submitted (its batch id comes after)."""
    conn.execute(
        insert(pilots),
        [
            {
                "id": pilot_id,
                "site": shape.site,
                "cores": shape.cores,
                "memory_mb": shape.memory_mb,
                "jobs_claimed": 0,
                "batch_system": batch_system,
                "resource_type": shape.resource_type,
                "walltime_s": shape.walltime_s,
                "state": PilotState.SUBMITTED,
                "submitted_at": t,
            }
            for pilot_id in pilot_ids
        ],
    )


def record_batch_ids(conn: Connection, batch_ids: dict[str, str]) -> None:
    """The batch id each pilot got from its batch system."""
    if batch_ids:
        conn.execute(
            update(pilots).where(pilots.c.id == bindparam("b_id")).values(batch_id=bindparam("b")),
            [{"b_id": pilot_id, "b": batch_id} for pilot_id, batch_id in batch_ids.items()],
        )


def record_states(conn: Connection, statuses: dict[str, BatchStatus], t: datetime) -> None:
    """New states of pilots (by pilot id): when they started, and when and how they ended."""
    for pilot_id, status in statuses.items():
        values: dict[str, object] = {"state": status.state}
        if status.state not in LIVE_STATES:
            values.update(ended_at=t, exit_code=status.exit_code)
        conn.execute(update(pilots).where(pilots.c.id == pilot_id).values(**values))
        if status.state in RAN:
            conn.execute(
                update(pilots)
                .where(pilots.c.id == pilot_id, pilots.c.started_at.is_(None))
                .values(started_at=t)
            )


def died_without_a_job(conn: Connection, pilot_ids: Iterable[str]) -> list[str]:
    """Those of ``pilot_ids`` that died without claiming a job."""
    rows = conn.execute(
        select(pilots.c.id).where(
            pilots.c.id.in_(list(pilot_ids)),
            pilots.c.state.in_([str(s) for s in DIED]),
            pilots.c.jobs_claimed == 0,
        )
    )
    return [r.id for r in rows]


def recent_failures(conn: Connection, site: str, window: int) -> tuple[int, int]:
    """(ended, died without a job) among the site's last ``window`` ended pilots."""
    rows = conn.execute(
        select(pilots.c.state, pilots.c.jobs_claimed)
        .where(pilots.c.site == site, pilots.c.ended_at.is_not(None))
        .order_by(pilots.c.ended_at.desc())
        .limit(window)
    ).all()
    died = sum(1 for r in rows if r.state in DIED and r.jobs_claimed == 0)
    return len(rows), died
