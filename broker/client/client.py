"""The submitter's Python client: everything a person does with pandamq, over AMQP
only, as the identity RabbitMQ validated. The ``pandamq`` command is built on it.

It holds no database credentials and imports no SQL code. Each call is a
request answered by the broker service; a refusal raises the error of the one
error tree that fits it (``NotFound``, ``NotAllowed``, ``BadInput``), and a
service that does not answer raises ``NoAnswer``.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any

from kombu import Connection

from broker import topology
from broker.api import (
    Answer,
    CommandOutcome,
    JobEnding,
    JobLog,
    JobPage,
    JobRecord,
    JobSummary,
    Query,
    Receipt,
    TaskEnding,
)
from broker.client import follow
from broker.client.rpc import Requests, drain, open_requests
from broker.errors import (
    BadInput,
    BrokerRefused,
    NotAllowed,
    NotFound,
    PandaMQError,
    PermanentError,
    RecoverableError,
)
from broker.messaging.connection import connect
from broker.messaging.publisher import Outgoing
from broker.protocol import JobCommand, JobSpec, TaskSpec, decode, decode_table, encode
from broker.reconnect import Backoff
from broker.security import identity
from broker.settings import Settings
from broker.states import FINAL_STATES

_ERRORS: dict[str, type[PandaMQError]] = {
    "not_found": NotFound,
    "not_allowed": NotAllowed,
    "failed": PermanentError,
}
#: At most this many jobs per catch-up query of a follower.
STATES_CHUNK = 5000


class Client:
    """A connection to pandamq for one submitter; use it as a context manager."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.user = identity.of(settings)
        self._topology = topology.Topology(settings.queue_type)
        self._connection: Connection | None = None
        self._requests: Requests | None = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection, if one is open."""
        if self._connection is not None:
            self._connection.release()
        self._connection = self._requests = None

    # --- submitting

    def submit(self, specs: Sequence[JobSpec]) -> list[Receipt]:
        """Submit jobs (a spec without an id gets a new one); what the service did with each."""
        specs = [s if s.id else dataclasses.replace(s, id=uuid.uuid4().hex) for s in specs]
        queue = self._topology.submit_queue()
        answers = self._ask([_to(queue.exchange.name, queue.routing_key, s) for s in specs])
        return [_receipt(spec.id, a) for spec, a in zip(specs, answers, strict=True)]

    def submit_task(self, task: TaskSpec) -> Receipt:
        """Submit a task (one without an id gets a new one); accepted, or refused with
        the error that fits the reason."""
        task = task if task.id else dataclasses.replace(task, id=uuid.uuid4().hex)
        queue = self._topology.tasks_queue()
        (answer,) = self._ask([_to(queue.exchange.name, queue.routing_key, task)])
        data = _data(answer)
        # An accepted task's note: what the service changed in it (too small to scout).
        note = data.get("reason", "") if isinstance(data, dict) else ""
        return Receipt(task.id, accepted=True, reason=str(note or ""))

    def kill(
        self, job_ids: Sequence[str] = (), task_id: str | None = None, reason: str = ""
    ) -> CommandOutcome:
        """Kill jobs (queued ones are cancelled, running ones' pilots told to stop)."""
        return self._command(JobCommand("kill", list(job_ids), task_id, reason))

    def retry(self, job_ids: Sequence[str] = (), task_id: str | None = None) -> CommandOutcome:
        """Give failed jobs a new attempt, whatever their error."""
        return self._command(JobCommand("retry", list(job_ids), task_id))

    def _command(self, command: JobCommand) -> CommandOutcome:
        queue = self._topology.commands_queue()
        (answer,) = self._ask([_to(queue.exchange.name, queue.routing_key, command)])
        return decode(CommandOutcome, _data(answer))

    # --- reading

    def jobs(
        self,
        site: str | None = None,
        state: str | None = None,
        task: str | None = None,
        owner: str | None = None,
        since: str | None = None,
        limit: int = 1000,
        cursor: str = "",
    ) -> JobPage:
        """One page of jobs, newest first; its ``cursor`` asks for the next page."""
        query = Query("jobs", "", site, state, task, owner, since, limit=limit, cursor=cursor)
        answer = self._query(query)
        return JobPage(decode_table(JobSummary, _data(answer)), answer.cursor)

    def job(self, job_id: str) -> JobRecord:
        """One job: spec, history, attempts, files, brokerage."""
        return decode(JobRecord, _data(self._query(Query("job", id=job_id))))

    def job_log(self, job_id: str, attempt: int | None = None) -> JobLog:
        """The payload's stdout and stderr of an attempt (default: the latest with a log)."""
        return decode(JobLog, _data(self._query(Query("log", id=job_id, attempt=attempt))))

    def states(self, job_ids: Sequence[str]) -> dict[str, JobSummary]:
        """Each of ``job_ids`` that exists and is the asker's to see, as it is now."""
        found: dict[str, JobSummary] = {}
        for start in range(0, len(job_ids), STATES_CHUNK):
            part = list(job_ids[start : start + STATES_CHUNK])
            answer = self._query(Query("states", job_ids=part, limit=max(1, len(part))))
            found |= {j.id: j for j in decode_table(JobSummary, _data(answer))}
        return found

    def tasks(self, limit: int = 1000, owner: str | None = None) -> list[dict[str, Any]]:
        """Tasks, newest first, with their progress."""
        return list(_data(self._query(Query("tasks", limit=limit, owner=owner))))

    def task(self, task_id: str) -> dict[str, Any]:
        """One task: spec, status, jobs per state, files done and failed."""
        return dict(_data(self._query(Query("task", id=task_id))))

    def errors(self, since: str | None = None, site: str | None = None) -> dict[str, Any]:
        """Failed attempts grouped by error code and diagnostic, over a window (``12h``)."""
        return dict(_data(self._query(Query("errors", since=since, site=site))))

    def datasets(self) -> list[dict[str, Any]]:
        """Every dataset, with its number of files."""
        return list(_data(self._query(Query("datasets"))))

    def dataset(self, name: str) -> dict[str, Any]:
        """One dataset: its files, the sites with a replica of each, its subscriptions."""
        return dict(_data(self._query(Query("dataset", id=name))))

    def _query(self, query: Query) -> Answer:
        queue = self._topology.queries_queue()
        out = _to(queue.exchange.name, queue.routing_key, query, persistent=False)
        (answer,) = self._ask([out])
        return answer

    # --- following

    def following(self, keys: Sequence[str]) -> follow.Follower:
        """A follower of the endings routed to ``keys``, bound from now on."""
        return follow.Follower(self._open(), keys)

    def watch(
        self,
        job_ids: Sequence[str] = (),
        task_id: str | None = None,
        timeout_s: float | None = None,
        follower: follow.Follower | None = None,
    ) -> Iterator[JobEnding | TaskEnding]:
        """The endings of ``job_ids`` (or of task ``task_id`` and its jobs), as they come;
        those that ended before are told first, from a catch-up query. Stops when
        every one has ended, or at ``timeout_s``; an outage is waited out."""
        watch = _Watch(self, list(job_ids), task_id, timeout_s, follower)
        return watch.endings()

    def _ask(self, requests: Sequence[Outgoing]) -> list[Answer]:
        self._open()
        assert self._requests is not None
        try:
            return self._requests.ask(requests, self.settings.request_timeout_s)
        except BrokerRefused:
            # RabbitMQ closed the channel, and its direct reply-to consumer with it.
            self._lost()
            raise

    def _open(self) -> Connection:
        if self._connection is None:
            self._connection = connect(self.settings)
            self._requests = open_requests(self._connection, self.user)
        return self._connection

    def _lost(self) -> None:
        if self._connection is not None:
            self._connection.collect()
        self._connection = self._requests = None


class _Watch:
    """One watch: bind, catch up, then take endings until all have ended."""

    def __init__(
        self,
        client: Client,
        job_ids: list[str],
        task_id: str | None,
        timeout_s: float | None,
        follower: follow.Follower | None,
    ) -> None:
        if not job_ids and not task_id:
            raise BadInput("watch: name at least one job, or a task")
        self._client = client
        self._waiting = set(job_ids)
        self._task_id = task_id
        self._deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self._follower = follower
        self._backoff = Backoff("watch", client.settings)

    def endings(self) -> Iterator[JobEnding | TaskEnding]:
        while self._open() and not self._expired():
            try:
                yield from self._session()
                return
            except RecoverableError as exc:
                self._client._lost()
                self._follower = None
                self._backoff.failed(exc)
                time.sleep(max(0.0, min(self._backoff.delay_s(self._backoff.failures), 5.0)))

    def _open(self) -> bool:
        return bool(self._waiting) or self._task_id is not None

    def _expired(self) -> bool:
        return self._deadline is not None and time.monotonic() > self._deadline

    def _session(self) -> Iterator[JobEnding | TaskEnding]:
        follower = self._follower or self._client.following(self._keys())
        self._backoff.succeeded()
        yield from self._catch_up()
        while self._open() and not self._expired():
            for ending in follower.take():
                if self._wanted(ending):
                    yield ending
            if self._open():
                self._drain()

    def _keys(self) -> list[str]:
        if self._task_id is not None:
            owner = self._client.task(self._task_id).get("owner")
            return follow.task_keys(owner, self._task_id)
        # The jobs' owners, as the service tells them: an operator may watch anyone's.
        jobs = self._client.states(sorted(self._waiting)).values()
        owners = {self._client.user} | {j.owner or topology.NO_OWNER for j in jobs}
        return [key for owner in sorted(owners) for key in follow.owner_keys(owner)]

    def _catch_up(self) -> Iterator[JobEnding | TaskEnding]:
        if self._task_id is not None:
            task = self._client.task(self._task_id)
            if task["status"] != "running":
                self._task_id = None
                yield _task_ending(task)
            return
        for job in self._client.states(sorted(self._waiting)).values():
            if job.state in FINAL_STATES:
                self._waiting.discard(job.id)
                yield _job_ending(job)

    def _wanted(self, ending: JobEnding | TaskEnding) -> bool:
        if isinstance(ending, TaskEnding):
            if ending.task_id != self._task_id:
                return False
            self._task_id = None
            return True
        if self._task_id is not None:
            return ending.task_id == self._task_id
        if ending.job_id in self._waiting:
            self._waiting.discard(ending.job_id)
            return True
        return False

    def _drain(self) -> None:
        left = 1.0 if self._deadline is None else self._deadline - time.monotonic()
        drain(self._client._open(), max(0.01, min(left, 1.0)))


def _task_ending(task: dict[str, Any]) -> TaskEnding:
    """A task that had ended before the watch began, as its ending would have told it."""
    return TaskEnding(
        task["id"],
        task["status"],
        task.get("ended_at") or "",
        task.get("owner"),
        task.get("jobs_by_state", {}),
    )


def _job_ending(job: JobSummary) -> JobEnding:
    """A job that had ended before the watch began, as its ending would have told it."""
    return JobEnding(
        job.id,
        job.attempt,
        job.state,
        job.modified_at,
        job.owner,
        job.task_id,
        job.site,
        job.exit_code,
        job.error_family,
        job.error_code,
        job.diagnostic,
    )


def _to(exchange: str, routing_key: str, message: Any, persistent: bool = True) -> Outgoing:
    return Outgoing(exchange, routing_key, encode(message), persistent=persistent)


def _data(answer: Answer) -> Any:
    """An answer's data, or its refusal raised as the error that fits it."""
    if not answer.ok:
        raise _ERRORS.get(answer.error_kind, BadInput)(answer.error)
    return answer.data


def _receipt(request_id: str, answer: Answer) -> Receipt:
    if answer.ok:
        return Receipt(request_id, accepted=True)
    return Receipt(request_id, accepted=False, reason=answer.error)
