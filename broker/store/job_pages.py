"""Jobs page by page, newest first, for the submitter's API: a keyset over
(created_at, id), so that page 1,000 of a user with 200,000 jobs costs what page
1 does; the cursor names the last job shown and the filters it belongs to."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, select, tuple_

from broker.errors import BadInput
from broker.store.clock import as_utc
from broker.store.jobs import PUBLIC_FIELDS, public_columns
from broker.store.schema import jobs

#: Where the job id and its creation time are in a row of ``PUBLIC_FIELDS``.
ID, CREATED = PUBLIC_FIELDS.index("id"), PUBLIC_FIELDS.index("created_at")


@dataclass(frozen=True)
class JobFilter:
    """What a page of jobs is narrowed to (None: no condition)."""

    site: str | None = None
    state: str | None = None
    task: str | None = None
    owner: str | None = None
    since: str | None = None

    def digest(self) -> str:
        """A short fingerprint, so that a cursor is only used with the filters it came from."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def page(
    conn: Connection,
    wanted: JobFilter,
    cursor: str,
    limit: int,
    modified_since: datetime | None = None,
) -> tuple[list[tuple[Any, ...]], str]:
    """Up to ``limit`` jobs after ``cursor`` (empty: the newest), as rows of
    ``PUBLIC_FIELDS``, and the next cursor (empty when this page is the last)."""
    # ``all()`` fetches the rows at once; iterating the result fetches them one by one
    # (a fifth of a 1,000-job page's CPU in the service).
    found = conn.execute(statement(wanted, cursor, limit, modified_since)).all()
    rows = [tuple(r) for r in found]
    shown = rows[:limit]
    more = len(rows) > limit
    return shown, _cursor(shown[-1], wanted) if more else ""


def statement(
    wanted: JobFilter, cursor: str, limit: int, modified_since: datetime | None = None
) -> Select[Any]:
    """The page's query: ``limit`` + 1 jobs after ``cursor``, the last telling if there is more."""
    stmt = select(*public_columns())
    for column, value in (
        (jobs.c.site, wanted.site),
        (jobs.c.state, wanted.state),
        (jobs.c.task_id, wanted.task),
        (jobs.c.owner, wanted.owner),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    if modified_since is not None:
        stmt = stmt.where(jobs.c.modified_at >= modified_since)
    if cursor:
        created, job_id = _after(cursor, wanted)
        # A row comparison is an index condition; the same test spelt with OR is a
        # filter, which read and dropped every row before the cursor (17.5 ms at page 100
        # of 200,000 jobs, against 0.46 ms).
        stmt = stmt.where(tuple_(jobs.c.created_at, jobs.c.id) < tuple_(created, job_id))
    return stmt.order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit + 1)


def _cursor(row: tuple[Any, ...], wanted: JobFilter) -> str:
    data = [row[CREATED], row[ID], wanted.digest()]
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()


def _after(cursor: str, wanted: JobFilter) -> tuple[datetime, str]:
    """The last job of the page before; ``BadInput`` for a cursor of other filters."""
    try:
        created, job_id, digest = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        at = as_utc(datetime.fromisoformat(created))
    except (ValueError, TypeError) as exc:
        raise BadInput("not a cursor of `pandamq jobs` (copy it whole from the last page)") from exc
    if digest != wanted.digest() or not isinstance(job_id, str):
        raise BadInput("that cursor belongs to a query with other filters; ask again without it")
    return at, job_id
