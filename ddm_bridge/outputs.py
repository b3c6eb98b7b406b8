"""Register what a job wrote, while it is ``holding`` (PanDA's Adder): outputs into
its task's ``output_dataset``, the log tarball into the task's log dataset
(``<output_dataset>.log``), with replicas at the job's site. A job of no task
writes into ``<job id>.output`` and ``<job id>.log``, in its owner's scope.
Called by the bridge (``ddm_bridge.adder``) in the transaction that moves the
jobs on.

The backend keeps the files an attempt stored (``DDMBackend.add_outputs``);
what an attempt whose files are refused stored is removed
(``discard_outputs``). A name registered already with other content is refused
with ``OUTPUT_NAME_TAKEN``, which is never retried, before the backend is asked.

A finished job whose spec names an ``output_destination`` (another site) goes
on to ``transferring``: its outputs form a dataset subscribed to that site,
and the bridge finishes the job when the subscription completes.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping

from broker.error_codes import DDMError, ErrorFamily
from broker.errors import BadInput, NameTaken
from broker.operations import reported
from broker.operations.retries import Failure
from broker.protocol import JobEvent, JobSpec, TaskSpec
from broker.scopes import output_scope
from broker.states import JobState
from broker.store import datasets, job_files, subscriptions
from broker.store.datasets import FileRecord
from broker.store.jobs import spec_of
from broker.store.tasks import task_specs
from ddm_bridge.backend import DDMBackend

log = logging.getLogger(__name__)


def dataset_name(spec: JobSpec, role: str, task: TaskSpec | None) -> str:
    """The output or log dataset of a job: its task's, or its own when it has no task."""
    if task is None:
        return f"{spec.task_id or spec.id}.{role}"
    return task.output_dataset if role == "output" else task.log_dataset


@dataclass(frozen=True)
class AfterHolding:
    """Where a job goes from ``holding``, with what values, and why; the failure retries
    decide on when it fails."""

    target: JobState
    values: dict[str, Any]
    reason: str
    failure: Failure | None = None


def register(
    conn: Connection,
    events: list[JobEvent],
    rows: dict[str, RowMapping],
    backend: DDMBackend,
    now: datetime,
) -> dict[str, AfterHolding]:
    """Register the files each final event of a ``holding`` job reports; where each job
    goes now."""
    tasks = task_specs(conn, {t for e in events if (t := rows[e.job_id]["task_id"])})
    problems = _Registration(conn, rows, tasks, backend, now).refusals(events)
    after: dict[str, AfterHolding] = {}
    for event in events:
        row = rows[event.job_id]
        problem = problems.get(event.job_id)
        if problem is not None:
            log.warning("job %s: outputs not registered: %s", event.job_id, problem.text)
            backend.discard_outputs(row["site"], event.job_id, event.attempt)
            after[event.job_id] = _refused(event, problem)
        elif event.kind == "finished" and _ship(conn, event, row, now):
            after[event.job_id] = AfterHolding(
                JobState.TRANSFERRING,
                {"exit_code": event.exit_code},
                f"outputs registered, shipped to {spec_of(row).output_destination}",
            )
        else:
            after[event.job_id] = _registered(event)
    return after


def _registered(event: JobEvent) -> AfterHolding:
    """The state the pilot reported, now that the files are registered."""
    target = reported.FINAL[event.kind]
    failure = reported.failure(event) if target == JobState.FAILED else None
    why = f"{event.kind} reported by pilot {event.pilot_id}; outputs registered"
    return AfterHolding(target, reported.final_values(event), why, failure)


def _refused(event: JobEvent, problem: Refused) -> AfterHolding:
    """A job whose files were refused: a finished one fails with the DDM error (a failed
    one keeps the pilot's), and its retry is decided on the DDM error."""
    text = f"outputs not registered: {problem.text}"
    failure = Failure(ErrorFamily.DDM.value, int(problem.code), event.exit_code, text)
    if event.kind == "cancelled":
        return AfterHolding(JobState.CANCELLED, reported.final_values(event), text)
    if event.kind == "failed":
        return AfterHolding(JobState.FAILED, reported.final_values(event), text, failure)
    return AfterHolding(JobState.FAILED, _refusal(event, problem), text, failure)


@dataclass(frozen=True)
class Refused:
    """Why an attempt's files were not registered, and the DDM code it fails with."""

    text: str
    code: DDMError = DDMError.OUTPUT_REGISTRATION


def _refusal(event: JobEvent, problem: Refused) -> dict[str, Any]:
    return {
        "exit_code": event.exit_code,
        "error_family": ErrorFamily.DDM.value,
        "error_code": int(problem.code),
        "diagnostic": f"outputs not registered: {problem.text}",
    }


def _ship(conn: Connection, event: JobEvent, row: RowMapping, now: datetime) -> bool:
    """Subscribe the job's outputs to its ``output_destination``; False if nothing to ship."""
    spec = spec_of(row)
    dids = [f"{f.scope}:{f.name}" for f in event.files if f.role == "output"]
    destination = spec.output_destination
    if not dids or destination is None or destination == row["site"]:
        return False
    ids = [file_id for file_id, _ in datasets.files_by_did(conn, dids).values()]
    name = f"panda.sub.{destination}.{uuid.uuid4().hex[:12]}"
    datasets.ensure_dataset(conn, name, "dispatch", now, task_id=spec.task_id, site=destination)
    datasets.add_to_dataset(conn, name, ids, now)
    datasets.close(conn, name, now)
    subscriptions.create(conn, name, destination, len(ids), now)
    job_files.set_dispatch(conn, [(spec.id, i, name) for i in ids], role="output")
    log.info("job %s: %d output(s) shipped to %s in %s", spec.id, len(ids), destination, name)
    return True


@dataclass(frozen=True)
class _Registration:
    """Registers the files of a batch's final events, in the bridge's transaction."""

    conn: Connection
    rows: dict[str, RowMapping]
    tasks: dict[str, TaskSpec]
    backend: DDMBackend
    now: datetime

    def refusals(self, events: list[JobEvent]) -> dict[str, Refused]:
        """Register the files of all ``events`` together; if that is refused, job by job,
        so that only the jobs whose files are refused fail. Why each of those was refused."""
        whole = self._refusal(events)
        if whole is None:
            return {}
        if len(events) == 1:
            return {events[0].job_id: whole}
        return {e.job_id: problem for e in events if (problem := self._refusal([e]))}

    def _refusal(self, events: list[JobEvent]) -> Refused | None:
        """Register the files of ``events``; what refused them, or None if nothing did."""
        try:
            with self.conn.begin_nested():
                self._register(events)
        except NameTaken as exc:
            return Refused(
                f"{exc}: another file of that scope has this name, and every attempt "
                "would write it again; give the output another name",
                DDMError.OUTPUT_NAME_TAKEN,
            )
        except BadInput as exc:
            return Refused(str(exc) or "refused")
        return None

    def _register(self, events: list[JobEvent]) -> None:
        """Catalogue the files (a name taken by other content is refused first), have the
        backend keep them, record their replicas and link them to their jobs."""
        wanted = [(event, self._placements(event)) for event in events]
        names = {dataset for _, placed in wanted for dataset, _, _ in placed}
        # A job retried by hand after its task's datasets were closed writes into
        # them again; they are closed again once it ends.
        datasets.reopen(self.conn, names, self.now)
        records = [r for _, placed in wanted for _, _, r in placed]
        datasets.upsert_files(self.conn, records, self.now)
        placements: list[datasets.Placement] = []
        for event, placed in wanted:
            row = self.rows[event.job_id]
            files = [(dataset, record) for dataset, _, record in placed]
            kept = self.backend.add_outputs(row["site"], event.job_id, event.attempt, files)
            placements += _into_datasets(placed, kept, row)
        datasets.register_all(self.conn, placements, self.now)
        dids = {f"{f.scope}:{f.name}": f.role for event in events for f in event.files}
        ids = datasets.files_by_did(self.conn, dids)
        job_files.link_outputs(
            self.conn,
            [
                (e.job_id, e.attempt, {ids[f"{f.scope}:{f.name}"][0]: f.role for f in e.files})
                for e in events
            ],
        )

    def _placements(self, event: JobEvent) -> list[tuple[str, str, FileRecord]]:
        """(dataset, role, file) of each file the event reports; ``BadInput`` for one in a
        scope other than the job's own."""
        row = self.rows[event.job_id]
        _check_scope(event, output_scope(row["owner"]))
        spec = spec_of(row)
        task = self.tasks.get(row["task_id"])
        return [
            (
                dataset_name(spec, f.role, task),
                f.role,
                FileRecord(f.scope, f.name, f.guid, f.size, f.adler32),
            )
            for f in event.files
        ]


def _into_datasets(
    placed: list[tuple[str, str, FileRecord]], kept: dict[str, str], row: RowMapping
) -> list[datasets.Placement]:
    """The catalogue's placements of one attempt's files, with the replicas the backend kept."""
    by_dataset: dict[tuple[str, str], list[tuple[FileRecord, str]]] = {}
    for dataset, role, record in placed:
        by_dataset.setdefault((dataset, role), []).append((record, kept[record.did]))
    return [
        datasets.Placement(name, files, row["site"], role, row["task_id"])
        for (name, role), files in by_dataset.items()
    ]


def _check_scope(event: JobEvent, scope: str) -> None:
    """Refuse files reported in a scope other than the job's own."""
    for f in event.files:
        if f.scope != scope:
            raise BadInput(f"{f.scope}:{f.name} is not in scope {scope}, the job's")
