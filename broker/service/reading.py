"""What each query of the submitter's API reads, for one asker: their own jobs and
tasks, or everyone's with the production role; the data catalogue and the error
list, which every submitter may read.

Each reader takes the read transaction, the query and the asker, and returns the
answer's data and cursor; an asker who may not see what they ask for gets
``NotAllowed`` naming the rule, a record that is not there ``NotFound``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection

from broker.api import (
    AttemptRecord,
    JobFile,
    JobLog,
    JobRecord,
    JobSummary,
    Query,
    Transition,
)
from broker.errors import NotAllowed, NotFound
from broker.monitor.datasets import job_file_list
from broker.monitor.payload_log import read_log, stored_log
from broker.monitor.views import errors_page
from broker.monitor.window import DEFAULT_WINDOW, since
from broker.protocol import JobSpec
from broker.security import identity, senders
from broker.settings import Settings
from broker.store import job_pages
from broker.store.clock import now
from broker.store.datasets import describe, list_datasets
from broker.store.jobs import PUBLIC_FIELDS, get_job, owners_of, summaries
from broker.store.subscriptions import moving
from broker.store.tasks import get_task, list_tasks

R = TypeVar("R")


@dataclass(frozen=True)
class Asker:
    """Who asks, and whether they may read everyone's jobs (the production role)."""

    user: str
    operator: bool

    @classmethod
    def of(cls, settings: Settings, user: str) -> Asker:
        """The asker ``user`` under these settings."""
        return cls(user, user in identity.production_role(settings))


class Reader:
    """Answers queries from one read transaction."""

    def __init__(self, conn: Connection, settings: Settings) -> None:
        self._conn = conn
        self._settings = settings

    def read(self, query: Query, asker: Asker) -> tuple[Any, str]:
        """The data and next cursor that answer ``query`` for ``asker``."""
        reader: Callable[[Query, Asker], tuple[Any, str]] = getattr(self, f"_{query.what}")
        return reader(query, asker)

    def _owned(self, owner: str | None, what: str, asker: Asker) -> None:
        why = senders.read_refusal(self._settings, asker.user, owner, what)
        if why is not None:
            raise NotAllowed(why)

    def _jobs(self, query: Query, asker: Asker) -> tuple[Any, str]:
        owner = _listed_owner(query, asker, "jobs")
        wanted = job_pages.JobFilter(query.site, query.state, query.task, owner, query.since)
        modified = since(query.since, now()) if query.since else None
        rows, cursor = job_pages.page(self._conn, wanted, query.cursor, query.limit, modified)
        return job_table(rows), cursor

    def _job(self, query: Query, asker: Asker) -> tuple[Any, str]:
        found = get_job(self._conn, query.id)
        self._owned(found["owner"], f"job {query.id}", asker)
        return job_record(found, job_file_list(self._conn, query.id)), ""

    def _log(self, query: Query, asker: Asker) -> tuple[Any, str]:
        self._owned(self._owner_of_job(query.id), f"the log of job {query.id}", asker)
        log = stored_log(self._conn, query.id, query.attempt)
        return JobLog(log.job_id, log.attempt, log.site, log.path, read_log(log)), ""

    def _owner_of_job(self, job_id: str) -> str | None:
        owners = owners_of(self._conn, [job_id])
        if job_id not in owners:
            raise NotFound(f"no job {job_id!r}")
        return owners[job_id]

    def _tasks(self, query: Query, asker: Asker) -> tuple[Any, str]:
        owner = _listed_owner(query, asker, "tasks")
        return list_tasks(self._conn, query.limit, owner=owner), ""

    def _task(self, query: Query, asker: Asker) -> tuple[Any, str]:
        found = get_task(self._conn, query.id)
        self._owned(found["owner"], f"task {query.id}", asker)
        return found, ""

    def _states(self, query: Query, asker: Asker) -> tuple[Any, str]:
        """Each of ``job_ids`` the asker may see, as it is now (a follower's catch-up)."""
        rows = summaries(self._conn, query.job_ids)
        mine = [r for r in rows if asker.operator or r[OWNER] == asker.user]
        return job_table(mine), ""

    def _errors(self, query: Query, asker: Asker) -> tuple[Any, str]:
        window = query.since or DEFAULT_WINDOW
        return errors_page(self._conn, since(window, now()), window, query.site), ""

    def _datasets(self, query: Query, asker: Asker) -> tuple[Any, str]:
        return list_datasets(self._conn), ""

    def _dataset(self, query: Query, asker: Asker) -> tuple[Any, str]:
        found = describe(self._conn, query.id)
        found["subscriptions"] = moving(self._conn, query.id)
        return found, ""


#: Where the owner is in a row of ``PUBLIC_FIELDS``.
OWNER = PUBLIC_FIELDS.index("owner")


def job_table(rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    """Rows of ``PUBLIC_FIELDS`` as a ``JobTable``'s data: the rows go out as they
    are, with no ``JobSummary`` built and taken apart again per job."""
    return {"fields": PUBLIC_FIELDS, "rows": rows}


def _listed_owner(query: Query, asker: Asker, what: str) -> str | None:
    """Whose ``what`` (jobs, tasks) a list shows: the asker's own unless another's is
    named; another's, or everyone's (None), only with the production role."""
    owner = query.owner if asker.operator else (query.owner or asker.user)
    if owner != asker.user and not asker.operator:
        raise NotAllowed(
            f"listing the {what} of {owner} refused: {asker.user} may list its own {what} "
            "only, and has no production role"
        )
    return owner


def record(cls: type[R], row: Any) -> R:
    """A record dataclass from a row or dict with (at least) its fields."""
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    return cls(**{name: row[name] for name in names if name in row})


def job_record(found: dict[str, Any], files: list[dict[str, Any]]) -> JobRecord:
    """A job as ``pandamq job`` shows it, from ``get_job`` and ``job_file_list``."""
    return JobRecord(
        job=record(JobSummary, found),
        spec=JobSpec(**found["spec"]),
        transitions=[record(Transition, t) for t in found["transitions"]],
        attempts=[record(AttemptRecord, a) for a in found["attempts"]],
        files=[record(JobFile, f) for f in files],
        brokerage=found.get("brokerage"),
    )
