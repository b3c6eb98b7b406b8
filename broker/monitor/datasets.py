"""The monitor's datasets: the newest datasets, one dataset's files, replicas and
subscriptions, and a job's files. Each read is bounded and indexed."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, select

from broker.errors import NotFound
from broker.store.clock import iso_times
from broker.store.schema import (
    dataset_contents,
    datasets,
    files,
    job_files,
    replicas,
    subscriptions,
)

#: Rows a dataset list or a dataset's file list shows at most.
LIMIT = 500


def dataset_list(
    conn: Connection, kind: str | None, state: str | None, task: str | None
) -> dict[str, Any]:
    """The datasets changed last (of a kind, in a state, of a task), with their file counts."""
    count = (
        select(func.count())
        .where(dataset_contents.c.dataset == datasets.c.name)
        .scalar_subquery()
        .label("files")
    )
    stmt = select(datasets, count).order_by(datasets.c.modified_at.desc()).limit(LIMIT)
    filters = ((datasets.c.kind, kind), (datasets.c.state, state), (datasets.c.task_id, task))
    for column, value in filters:
        if value is not None:
            stmt = stmt.where(column == value)
    rows = [iso_times(dict(r)) for r in conn.execute(stmt).mappings()]
    return {"kind": kind, "state": state, "task": task, "datasets": rows}


def dataset_page(conn: Connection, name: str) -> dict[str, Any]:
    """A dataset: its fields, files in order, replicas per site, subscriptions."""
    row = conn.execute(select(datasets).where(datasets.c.name == name)).mappings().first()
    if row is None:
        raise NotFound(f"no dataset {name!r}")
    return {
        **iso_times(dict(row)),
        "files": _files(conn, name),
        "replicas": _replicas(conn, name),
        "subscriptions": _subscriptions(conn, name),
    }


def _files(conn: Connection, name: str) -> list[dict[str, Any]]:
    stmt = (
        select(dataset_contents.c.position, files.c.scope, files.c.name, files.c.guid)
        .add_columns(files.c.size, files.c.adler32)
        .join(files, files.c.id == dataset_contents.c.file_id)
        .where(dataset_contents.c.dataset == name)
        .order_by(dataset_contents.c.position)
        .limit(LIMIT)
    )
    return [_with_did(r) for r in conn.execute(stmt).mappings()]


def _with_did(row: Any) -> dict[str, Any]:
    return {**row, "did": f"{row['scope']}:{row['name']}"}


def _replicas(conn: Connection, name: str) -> list[dict[str, Any]]:
    stmt = (
        select(replicas.c.site, replicas.c.state, func.count().label("files"))
        .join(dataset_contents, dataset_contents.c.file_id == replicas.c.file_id)
        .where(dataset_contents.c.dataset == name)
        .group_by(replicas.c.site, replicas.c.state)
        .order_by(replicas.c.site, replicas.c.state)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


def _subscriptions(conn: Connection, name: str) -> list[dict[str, Any]]:
    stmt = select(subscriptions).where(subscriptions.c.dataset == name)
    return [
        iso_times(dict(r)) for r in conn.execute(stmt.order_by(subscriptions.c.site)).mappings()
    ]


def job_file_list(conn: Connection, job_id: str) -> list[dict[str, Any]]:
    """A job's input and output files, with the dispatch dataset that brings each."""
    stmt = (
        select(job_files.c.role, job_files.c.attempt, job_files.c.dispatch_dataset)
        .add_columns(files.c.scope, files.c.name, files.c.size, files.c.adler32)
        .join(files, files.c.id == job_files.c.file_id)
        .where(job_files.c.job_id == job_id)
        .order_by(job_files.c.role, files.c.name)
    )
    return [_with_did(r) for r in conn.execute(stmt).mappings()]
