"""Subscriptions in SQL: a dataset asked for at a site, and how far it got.

States: ``requested`` (asked for), ``transferring`` (files moving), then
``done`` or ``failed`` (with the error). ``modified_at`` is the progress clock
that the bridge's timeout looks at.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from broker.store.clock import iso_times
from broker.store.datasets import AVAILABLE, chunks
from broker.store.schema import dataset_contents, replicas, subscriptions

REQUESTED, TRANSFERRING, DONE, FAILED = "requested", "transferring", "done", "failed"
ACTIVE = (REQUESTED, TRANSFERRING)


def create(conn: Connection, dataset: str, site: str, files_total: int, now: datetime) -> None:
    """A new ``requested`` subscription of ``dataset`` to ``site``."""
    conn.execute(
        insert(subscriptions).values(
            dataset=dataset,
            site=site,
            state=REQUESTED,
            files_total=files_total,
            files_done=0,
            attempts=0,
            created_at=now,
            modified_at=now,
        )
    )


def in_flight(conn: Connection, site: str, file_ids: Sequence[int]) -> dict[int, str]:
    """For files on their way to ``site``, the dispatch dataset bringing each."""
    found: dict[int, str] = {}
    for part in chunks(list(file_ids)):
        stmt = (
            select(dataset_contents.c.file_id, subscriptions.c.dataset)
            .join(subscriptions, subscriptions.c.dataset == dataset_contents.c.dataset)
            .where(
                subscriptions.c.site == site,
                subscriptions.c.state.in_(ACTIVE),
                dataset_contents.c.file_id.in_(part),
            )
        )
        found |= {r.file_id: r.dataset for r in conn.execute(stmt)}
    return found


def active(conn: Connection, *states: str) -> list[tuple[str, str]]:
    """(dataset, site) of every subscription in progress (or in one of ``states``)."""
    stmt = (
        select(subscriptions.c.dataset, subscriptions.c.site)
        .where(subscriptions.c.state.in_(states or ACTIVE))
        .order_by(subscriptions.c.id)
    )
    return [(r.dataset, r.site) for r in conn.execute(stmt)]


def progress(
    conn: Connection,
    dataset: str,
    site: str,
    state: str,
    now: datetime,
    retries: int = 0,
    error: str | None = None,
) -> bool:
    """Record progress of a subscription still in progress; False if it had already ended.

    Files placed are counted by :func:`count_placed`, not here.
    """
    values: dict[str, Any] = {
        "state": state,
        "modified_at": now,
        "attempts": subscriptions.c.attempts + retries,
    }
    if state == TRANSFERRING:
        values["started_at"] = func.coalesce(subscriptions.c.started_at, now)
    if state in (DONE, FAILED):
        values |= {"ended_at": now, "error": error}
    stmt = (
        update(subscriptions)
        .where(
            subscriptions.c.dataset == dataset,
            subscriptions.c.site == site,
            subscriptions.c.state.in_(ACTIVE),
        )
        .values(values)
        .returning(subscriptions.c.id)
    )
    return conn.execute(stmt).first() is not None


def count_placed(conn: Connection, keys: Iterable[tuple[str, str]]) -> None:
    """Set ``files_done`` of each (dataset, site) subscription to how many files of the
    dataset have an available replica at the site.

    Counted from the replicas rather than added up from the DDM's reports: a
    subscription resumed after a restart reports the files at the site again.
    """
    placed = (
        select(func.count())
        .select_from(
            dataset_contents.join(replicas, replicas.c.file_id == dataset_contents.c.file_id)
        )
        .where(
            dataset_contents.c.dataset == subscriptions.c.dataset,
            replicas.c.site == subscriptions.c.site,
            replicas.c.state == AVAILABLE,
        )
        .scalar_subquery()
    )
    for dataset, site in sorted(set(keys)):
        conn.execute(
            update(subscriptions)
            .where(subscriptions.c.dataset == dataset, subscriptions.c.site == site)
            .values(files_done=placed)
        )


def stalled(conn: Connection, cutoff: datetime, bridge: str | None = None) -> list[tuple[str, str]]:
    """(dataset, site) of subscriptions in progress (that ``bridge`` serves) that did not
    move since ``cutoff``."""
    stmt = select(subscriptions.c.dataset, subscriptions.c.site).where(
        subscriptions.c.state.in_(ACTIVE), subscriptions.c.modified_at < cutoff
    )
    if bridge is not None:
        stmt = stmt.where(subscriptions.c.bridge == bridge)
    return [(r.dataset, r.site) for r in conn.execute(stmt)]


def moving(conn: Connection, dataset: str) -> list[dict[str, Any]]:
    """Subscriptions of ``dataset`` and of any dataset that shares a file with it."""
    mine = dataset_contents.alias("mine")
    theirs = dataset_contents.alias("theirs")
    sharing = (
        select(theirs.c.dataset)
        .join(mine, mine.c.file_id == theirs.c.file_id)
        .where(mine.c.dataset == dataset)
    )
    stmt = (
        select(subscriptions)
        .where((subscriptions.c.dataset == dataset) | subscriptions.c.dataset.in_(sharing))
        .order_by(subscriptions.c.id)
    )
    return [iso_times(dict(r)) for r in conn.execute(stmt).mappings()]
