"""Close output and log datasets once every job that could still add to them is final."""

from __future__ import annotations

from sqlalchemy import Connection, and_, or_, select

from broker.states import FINAL_STATES
from broker.store.datasets import OPEN
from broker.store.schema import dataset_contents, datasets, job_files, jobs

_ACTIVE = ~jobs.c.state.in_([s.value for s in FINAL_STATES])


def closable(conn: Connection, limit: int = 1000) -> list[str]:
    """Open output and log datasets whose task (or, with no task, whose jobs) are all final."""
    task_active = select(jobs.c.id).where(jobs.c.task_id == datasets.c.task_id, _ACTIVE).exists()
    writer_active = (
        select(jobs.c.id)
        .join(job_files, job_files.c.job_id == jobs.c.id)
        .join(dataset_contents, dataset_contents.c.file_id == job_files.c.file_id)
        .where(dataset_contents.c.dataset == datasets.c.name, _ACTIVE)
        .exists()
    )
    stmt = (
        select(datasets.c.name)
        .where(
            datasets.c.kind.in_(["output", "log"]),
            datasets.c.state == OPEN,
            or_(
                and_(datasets.c.task_id.is_not(None), ~task_active),
                and_(datasets.c.task_id.is_(None), ~writer_active),
            ),
        )
        .order_by(datasets.c.name)
        .limit(limit)
    )
    return [r.name for r in conn.execute(stmt)]
