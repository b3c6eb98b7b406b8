"""Tasks: split a task over its input dataset's files into jobs, and broker them.

A task of N files with ``files_per_job`` = k becomes ceil(N / k) jobs, in
the dataset's order; job n (from 1) is ``<task id>-<n, 6 digits>``, reads
its k files and writes one output file ``<output dataset>._<n, 6 digits>``,
registered into the task's output dataset (its log into ``<output dataset>.log``).
The task, its two datasets and all its jobs (each once, in the state brokerage
and throttling leave it in) are written in one transaction,
so a redelivered task submission finds the task there and does nothing twice;
a task whose output or log dataset exists already is refused.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable, Sequence

from sqlalchemy import Connection, Engine

from broker.api import Receipt
from broker.messaging.consumer import Incoming
from broker.operations import scouts
from broker.operations.brokerage import Brokerage
from broker.operations.intake import store_jobs
from broker.operations.throttle import Limits
from broker.operations.user_caps import Caps, QueuedCap
from broker.protocol import JobSpec, TaskSpec
from broker.security import senders
from broker.settings import Settings
from broker.store.clock import now
from broker.store.datasets import FileRecord, dataset_exists, dataset_files
from broker.store.engine import transaction
from broker.store.jobs import insert_new
from broker.store.sites import known_sites
from broker.store.tasks import insert_task, owners_of, taken_datasets

log = logging.getLogger(__name__)


def job_id(task_id: str, n: int) -> str:
    """The id of a task's n-th job (from 1)."""
    return f"{task_id}-{n:06d}"


def split(task: TaskSpec, files: Sequence[FileRecord]) -> list[JobSpec]:
    """The task's jobs, ``files_per_job`` files each, in the dataset's order."""
    k = task.files_per_job
    return [
        _job(task, n, files[start : start + k])
        for n, start in enumerate(range(0, len(files), k), 1)
    ]


def _job(task: TaskSpec, n: int, files: Sequence[FileRecord]) -> JobSpec:
    outputs = [f"{task.output_dataset}._{n:06d}"]
    command = task.command.replace("{inputs}", " ".join(shlex.quote(f.name) for f in files))
    command = command.replace("{outputs}", " ".join(shlex.quote(o) for o in outputs))
    return JobSpec(
        command=command,
        id=job_id(task.id, n),
        name=f"{task.name or task.id} job {n}",
        task_id=task.id,
        cores=task.cores,
        memory_mb=task.memory_mb,
        walltime_s=task.walltime_s,
        priority=task.priority,
        max_attempts=task.max_attempts,
        input_files=[f.did for f in files],
        output_files=outputs,
        output_destination=task.output_destination,
        release=task.release,
        activity=task.activity,
        sites=list(task.sites),
    )


class TaskHandler:
    """Handles batches from ``pandamq.tasks``: each new task is split, brokered and activated."""

    def __init__(
        self, engine: Engine, settings: Settings, site_queues_ready: Callable[[set[str]], None]
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._site_queues_ready = site_queues_ready

    def __call__(self, batch: list[Incoming[TaskSpec]]) -> None:
        """Split, broker and activate each task not seen before; refuse tasks without input."""
        t = now()
        sites: set[str] = set()
        with transaction(self._engine) as conn:
            seen = owners_of(conn, (i.message.id for i in batch))
            brokerage = Brokerage.of(conn, self._settings)
            cap = QueuedCap(conn, Caps.of(self._settings))
            for incoming in senders.allowed(batch, "task", senders.user_required):
                task = incoming.message
                incoming.reply(Receipt(task.id, accepted=True))
                if not self._valid(incoming) or _taken(incoming, seen):
                    continue
                seen[task.id] = incoming.user_id
                specs = split(task, dataset_files(conn, task.input_dataset))
                if not self._can_start(conn, incoming, specs, cap):
                    continue
                plan = scouts.plan(task, specs, self._settings)
                incoming.reply(Receipt(task.id, accepted=True, reason=plan.note))
                insert_task(conn, task, t, incoming.user_id, plan)
                owners = dict.fromkeys((s.id for s in specs), incoming.user_id)
                placed, unplaced = store_jobs(
                    conn, brokerage, plan.brokered, owners, t, Limits.of(self._settings)
                )
                insert_new(conn, scouts.held_jobs(plan.held, owners), t)
                scouts.started(task.id, plan)
                sites |= {p.site for p in placed}
                log.info(
                    "task %s: %d job(s), %d scout(s), %d found no site",
                    task.id,
                    len(specs),
                    plan.scouts,
                    len(unplaced),
                )
        self._site_queues_ready(sites)

    @staticmethod
    def _can_start(
        conn: Connection, incoming: Incoming[TaskSpec], specs: list[JobSpec], cap: QueuedCap
    ) -> bool:
        """Refuse a task whose input dataset is missing or empty, whose output or log
        dataset exists already, that names sites not in the catalogue, or whose jobs
        would take its user beyond the cap of queued jobs."""
        why = _refusal(conn, incoming.message, specs) or cap.refusal(incoming.user_id, len(specs))
        if why is not None:
            incoming.refuse(
                f"task spec: {why}", "not_found" if "does not exist" in why else "bad_input"
            )
            return False
        return True

    @staticmethod
    def _valid(incoming: Incoming[TaskSpec]) -> bool:
        """Refuse a task without an id (the CLI and the client fill one in)."""
        if not incoming.message.id:
            incoming.refuse("task spec: field 'id' is required on the wire")
            return False
        return True


def _taken(incoming: Incoming[TaskSpec], seen: dict[str, str | None]) -> bool:
    """Whether the task is stored already: by its sender (a redelivery, answered as
    accepted) or by another user (refused)."""
    task = incoming.message
    if task.id not in seen:
        return False
    if seen[task.id] != incoming.user_id:
        incoming.refuse(f"task spec: task {task.id!r} exists already")
    return True


def _refusal(conn: Connection, task: TaskSpec, specs: list[JobSpec]) -> str | None:
    if not specs:
        if not dataset_exists(conn, task.input_dataset):
            return f"input dataset {task.input_dataset!r} does not exist"
        return f"input dataset {task.input_dataset!r} has no files"
    taken = taken_datasets(conn, task)
    if taken:
        return f"dataset {taken[0]!r} exists already"
    named = {*task.sites, *filter(None, [task.output_destination])}
    unknown = sorted(named - set(known_sites(conn, named)))
    if unknown:
        return f"site(s) {', '.join(unknown)} not in the site catalogue"
    return None
