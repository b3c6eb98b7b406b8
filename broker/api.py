"""The submitter's API on the wire: queries, the broker service's answers, and the
notifications of jobs and tasks that ended.

A submitter (the CLI, the Python client in ``broker.client``) never opens the
database: it publishes a request (a ``Query``, a ``JobSpec``, a ``TaskSpec`` or
a ``JobCommand``) with the AMQP properties ``reply_to`` and ``correlation_id``,
and the broker service answers each with an ``Answer``. Job and task endings are
published on a topic exchange whose routing keys start with the owner. Standard
library only, like ``broker.protocol``: the client imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from broker.errors import SpecError
from broker.protocol import JobSpec

QueryKind = Literal[
    "jobs", "job", "log", "tasks", "task", "errors", "datasets", "dataset", "states"
]
ErrorKind = Literal["", "bad_input", "not_found", "not_allowed", "failed"]

#: The longest filter value a query may carry (a site, a state, a window, a cursor).
MAX_FILTER_CHARS = 256
#: The most jobs one page of ``jobs``, or one ``states`` query, may ask for.
MAX_PAGE = 10_000
#: The largest query body the service reads; a larger one is refused unread.
MAX_QUERY_BYTES = 512 * 1024


@dataclass(frozen=True)
class Query:
    """A submitter asks the broker service to read something for it."""

    QUEUE: ClassVar[str] = "pandamq.service.queries"
    what: QueryKind
    id: str = ""
    site: str | None = None
    state: str | None = None
    task: str | None = None
    owner: str | None = None
    since: str | None = None
    attempt: int | None = None
    limit: int = 1000
    cursor: str = ""
    job_ids: list[str] = field(default_factory=list)

    def check(self) -> None:
        """Rules beyond types: bounded sizes, so that no query is costly to refuse."""
        for name in ("id", "site", "state", "task", "owner", "since", "cursor"):
            value = getattr(self, name)
            if value is not None and len(value) > MAX_FILTER_CHARS:
                raise SpecError(
                    f"query: field {name!r} is {len(value)} characters long, "
                    f"at most {MAX_FILTER_CHARS}"
                )
        if not 1 <= self.limit <= MAX_PAGE:
            raise SpecError(f"query: field 'limit' must be 1-{MAX_PAGE}, got {self.limit}")
        if len(self.job_ids) > MAX_PAGE:
            raise SpecError(f"query: at most {MAX_PAGE} job_ids, got {len(self.job_ids)}")
        if self.what in ("job", "log", "task", "dataset") and not self.id:
            raise SpecError(f"query: {self.what!r} needs field 'id'")


@dataclass(frozen=True)
class Answer:
    """The broker service's reply to one request: what it asked for, or why not."""

    QUEUE: ClassVar[str] = "amq.rabbitmq.reply-to"
    ok: bool
    error: str = ""
    error_kind: ErrorKind = ""
    data: Any = None
    cursor: str = ""


# Not frozen: a client builds these by the thousand (a page of ``jobs``), and a frozen
# dataclass's __init__ costs 4 us a job (a call of object.__setattr__ per field)
# against 0.6 us.
@dataclass(slots=True)
class JobSummary:
    """A job as ``pandamq jobs`` lists it."""

    id: str
    state: str
    attempt: int
    resource_type: str
    priority: int
    created_at: str
    modified_at: str
    name: str | None = None
    task_id: str | None = None
    site: str | None = None
    pilot_id: str | None = None
    exit_code: int | None = None
    error_family: str | None = None
    error_code: int | None = None
    diagnostic: str | None = None
    owner: str | None = None


@dataclass(frozen=True)
class JobTable:
    """Jobs as the answer to ``jobs`` and ``states`` carries them: the names of
    ``JobSummary``'s fields once, then the values of each job in that order (half
    the bytes of an object per job, and a third of the time to build and read)."""

    fields: list[str]
    rows: list[list[Any]]


@dataclass(frozen=True)
class JobPage:
    """One page of ``jobs``, newest first; ``cursor`` asks for the next (empty: last page)."""

    jobs: list[JobSummary]
    cursor: str = ""


@dataclass(frozen=True)
class Transition:
    """One row of a job's history."""

    attempt: int
    to_state: str
    at: str
    from_state: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt of a job: where and by whom it ran, and how it ended."""

    attempt: int
    state: str
    created_at: str
    site: str | None = None
    pilot_id: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    exit_code: int | None = None
    error_family: str | None = None
    error_code: int | None = None
    diagnostic: str | None = None
    retry_decision: str | None = None
    memory_mb: int | None = None
    peak_rss_mb: int | None = None
    cpu_time_s: float | None = None
    wall_time_s: float | None = None
    output_bytes: int | None = None


@dataclass(frozen=True)
class JobFile:
    """A file a job read or wrote, with the dataset it is in."""

    role: str
    attempt: int
    did: str
    scope: str
    name: str
    size: int
    adler32: str
    dataset: str | None = None
    dispatch_dataset: str | None = None


@dataclass(frozen=True)
class JobRecord:
    """One job as ``pandamq job ID`` shows it: spec, history, attempts, files, brokerage."""

    job: JobSummary
    spec: JobSpec
    transitions: list[Transition]
    attempts: list[AttemptRecord]
    files: list[JobFile]
    brokerage: Any = None


@dataclass(frozen=True)
class JobLog:
    """The payload's stdout and stderr of one attempt, from its log tarball on the SE."""

    job_id: str
    attempt: int
    site: str
    path: str
    files: dict[str, str]


@dataclass(frozen=True)
class Receipt:
    """What the broker service did with one submission or command."""

    id: str
    accepted: bool
    reason: str = ""


@dataclass(frozen=True)
class CommandOutcome:
    """What a kill or retry changed: each targeted job's attempt, and those left as they were."""

    command: str
    attempts: dict[str, int]
    changed: list[str]
    unchanged: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskTuning:
    """The requests a task's jobs are tuned to (None: as the spec asks), and what they
    come from: a percentile of how many finished jobs, and each measure there; the
    ``tuning`` of ``pandamq task ID`` (docs/reliability.md)."""

    memory_mb: int | None
    walltime_s: int | None
    jobs: int
    percentile: float
    peak_rss_mb: int | None = None
    wall_time_s: float | None = None
    cpu_time_s: float | None = None
    output_bytes: int | None = None


@dataclass(frozen=True)
class JobEnding:
    """A job reached a final state (no retry follows): published on ``pandamq.endings``."""

    QUEUE: ClassVar[str] = "amq.gen-<tag>"
    job_id: str
    attempt: int
    state: str
    at: str
    owner: str | None = None
    task_id: str | None = None
    site: str | None = None
    exit_code: int | None = None
    error_family: str | None = None
    error_code: int | None = None
    diagnostic: str | None = None


@dataclass(frozen=True)
class TaskEnding:
    """Every job of a task is final: published on ``pandamq.endings``."""

    QUEUE: ClassVar[str] = "amq.gen-<tag>"
    task_id: str
    status: str
    at: str
    owner: str | None = None
    jobs_by_state: dict[str, int] = field(default_factory=dict)


MESSAGES: tuple[type[Any], ...] = (Query, Answer, JobEnding, TaskEnding)
#: What an answer's ``data`` holds, for docs/protocol.md.
RECORDS: tuple[type[Any], ...] = (
    JobSummary,
    JobTable,
    Transition,
    AttemptRecord,
    JobFile,
    JobRecord,
    JobLog,
    Receipt,
    CommandOutcome,
    TaskTuning,
)
