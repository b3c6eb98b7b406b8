"""The links between jobs and their files: which inputs a job needs, which are
missing at its site, which dispatch dataset brings each, and what it wrote."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from broker.protocol import FileInfo
from broker.states import JobState
from broker.store.bulk import insert_each
from broker.store.datasets import AVAILABLE, chunks
from broker.store.schema import files, job_files, jobs, replicas

INPUT = "input"


def link_inputs(
    conn: Connection,
    wanted: Sequence[tuple[str, int, list[str]]],
    known: Mapping[str, tuple[int, Any]],
) -> None:
    """Record the input files of job attempts (id, attempt, DIDs) that are ``known`` (file
    id first, by DID: ``datasets.file_replicas``).

    A job's earlier links are replaced, so a new attempt waits on nothing old.
    """
    for part in chunks([job_id for job_id, _, _ in wanted]):
        conn.execute(
            delete(job_files).where(job_files.c.job_id.in_(part), job_files.c.role == INPUT)
        )
    add_inputs(conn, wanted, {did: file_id for did, (file_id, _) in known.items()})


def add_inputs(
    conn: Connection,
    wanted: Sequence[tuple[str, int, list[str]]],
    known: Mapping[str, int],
) -> None:
    """Link job attempts (id, attempt, DIDs) to those of their input files that are
    ``known`` (file ids by DID), next to any links they have."""
    rows = [
        {"job_id": job_id, "file_id": known[d], "role": INPUT, "attempt": attempt}
        for job_id, attempt, dids in wanted
        for d in dict.fromkeys(dids)
        if d in known
    ]
    insert_each(conn, job_files, rows)


def waiting_for_dispatch(conn: Connection, limit: int) -> list[tuple[str, int, str]]:
    """(id, attempt, site) of ``assigned`` jobs with inputs that no dispatch dataset brings yet.

    On PostgreSQL the job rows stay locked and locked ones are skipped, so two
    bridges never subscribe the same job.
    """
    linked = (
        select(job_files.c.job_id)
        .where(job_files.c.job_id == jobs.c.id, job_files.c.dispatch_dataset.is_not(None))
        .exists()
    )
    has_inputs = (
        select(job_files.c.job_id)
        .where(job_files.c.job_id == jobs.c.id, job_files.c.role == INPUT)
        .exists()
    )
    stmt = (
        select(jobs.c.id, jobs.c.attempt, jobs.c.site)
        .where(jobs.c.state == JobState.ASSIGNED.value, has_inputs, ~linked)
        .order_by(jobs.c.priority.desc(), jobs.c.id)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(of=jobs, skip_locked=True)
    return [(r.id, r.attempt, r.site) for r in conn.execute(stmt)]


def set_dispatch(
    conn: Connection, links: Sequence[tuple[str, int, str]], role: str = INPUT
) -> None:
    """Record, for (job, file id, dataset), which dispatch dataset moves the job's file."""
    if not links:
        return
    conn.execute(
        update(job_files)
        .where(
            job_files.c.job_id == bindparam("b_job"),
            job_files.c.file_id == bindparam("b_file"),
            job_files.c.role == role,
        )
        .values(dispatch_dataset=bindparam("b_dataset")),
        [{"b_job": j, "b_file": f, "b_dataset": d} for j, f, d in links],
    )


def jobs_waiting_on(conn: Connection, dataset: str) -> list[tuple[str, int, JobState]]:
    """(id, attempt, state) of jobs ``assigned`` for an input, or ``transferring`` an
    output, that ``dataset`` moves."""
    waiting = [JobState.ASSIGNED.value, JobState.TRANSFERRING.value]
    stmt = (
        select(jobs.c.id, jobs.c.attempt, jobs.c.state)
        .distinct()
        .join(job_files, job_files.c.job_id == jobs.c.id)
        .where(job_files.c.dispatch_dataset == dataset, jobs.c.state.in_(waiting))
    )
    return [(r.id, r.attempt, JobState(r.state)) for r in conn.execute(stmt)]


def input_infos(
    conn: Connection, job_ids: Iterable[str], rse_of: Callable[[str], str] = str
) -> dict[str, list[FileInfo]]:
    """The input files of each job that has some, for the pilot to stage in and verify,
    each with the replica available at the job's site (``rse_of`` names the site's
    storage element), if the catalogue has one."""
    found: dict[str, list[FileInfo]] = defaultdict(list)
    at_site = (replicas.c.file_id == files.c.id) & (replicas.c.site == jobs.c.site)
    for part in chunks(list(set(job_ids))):
        stmt = (
            select(job_files.c.job_id, files, jobs.c.site.label("job_site"), replicas.c.path)
            .join(files, job_files.c.file_id == files.c.id)
            .join(jobs, jobs.c.id == job_files.c.job_id)
            .outerjoin(replicas, at_site & (replicas.c.state == AVAILABLE))
            .where(job_files.c.job_id.in_(part), job_files.c.role == INPUT)
            .order_by(files.c.scope, files.c.name)
        )
        for r in conn.execute(stmt):
            rse = rse_of(r.job_site) if r.path and r.job_site else ""
            found[r.job_id].append(
                FileInfo(r.scope, r.name, r.guid, r.size, r.adler32, rse=rse, pfn=r.path or "")
            )
    return dict(found)


def link_outputs(conn: Connection, produced: Sequence[tuple[str, int, dict[int, str]]]) -> None:
    """Record the files (id → role) job attempts wrote, (job id, attempt, files); repeating
    it changes nothing."""
    present: set[tuple[str, int]] = set()
    for part in chunks(list({job_id for job_id, _, _ in produced})):
        stmt = select(job_files.c.job_id, job_files.c.file_id).where(job_files.c.job_id.in_(part))
        present |= {(r.job_id, r.file_id) for r in conn.execute(stmt)}
    rows = [
        {"job_id": job_id, "file_id": fid, "role": role, "attempt": attempt}
        for job_id, attempt, files in produced
        for fid, role in files.items()
        if (job_id, fid) not in present
    ]
    if rows:
        conn.execute(insert(job_files), rows)
