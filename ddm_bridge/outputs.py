"""Register what a job wrote, while it is ``holding``: outputs into its task's
output dataset, the log tarball into its log dataset, with replicas at the
job's site. Called by the broker's event handler in the event's transaction.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import Connection, RowMapping

from broker.errors import BadInput
from broker.protocol import FileInfo, JobEvent, JobSpec
from broker.states import FINAL_STATES, JobState
from broker.store import datasets, job_files
from broker.store.datasets import FileRecord
from broker.store.jobs import spec_of
from ddm_bridge.se import se_path

log = logging.getLogger(__name__)


def dataset_name(spec: JobSpec, role: str) -> str:
    """The output or log dataset of a job: its task's, or its own when it has no task."""
    return f"{spec.task_id or spec.id}.{role}"


def register(
    conn: Connection, events: list[JobEvent], rows: dict[str, RowMapping], root: str, now: datetime
) -> dict[str, str]:
    """Register the files each finished or failed event reports; why, per job, it could not."""
    refused = {}
    for event in events:
        row = rows[event.job_id]
        if event.kind not in ("finished", "failed") or not event.files:
            continue
        if JobState(row["state"]) in FINAL_STATES:
            continue
        problem = _register_job(conn, event, row, root, now)
        if problem is not None:
            log.warning("job %s: outputs not registered: %s", event.job_id, problem)
            refused[event.job_id] = problem
    return refused


def _register_job(
    conn: Connection, event: JobEvent, row: RowMapping, root: str, now: datetime
) -> str | None:
    spec = spec_of(row)
    try:
        with conn.begin_nested():
            for role in ("output", "log"):
                infos = [f for f in event.files if f.role == role]
                if infos:
                    _register_files(conn, spec, event.attempt, row["site"], infos, role, root, now)
    except BadInput as exc:
        return str(exc)
    return None


def _register_files(
    conn: Connection,
    spec: JobSpec,
    attempt: int,
    site: str,
    infos: list[FileInfo],
    role: str,
    root: str,
    now: datetime,
) -> None:
    records = [FileRecord(f.scope, f.name, f.guid, f.size, f.adler32) for f in infos]
    placed = [(r, str(se_path(root, site, r.scope, r.name))) for r in records]
    name = dataset_name(spec, role)
    datasets.register(conn, name, placed, site, now, kind=role, task_id=spec.task_id)
    ids = datasets.files_by_did(conn, (r.did for r in records))
    job_files.link_outputs(conn, spec.id, attempt, {ids[r.did][0]: role for r in records})
