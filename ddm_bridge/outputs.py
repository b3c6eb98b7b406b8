"""Register what a job wrote, while it is ``holding``: outputs into its task's
``output_dataset``, the log tarball into the task's log dataset
(``<output_dataset>.log``), with replicas at the job's site. A job of no task
writes into ``<job id>.output`` and ``<job id>.log``, in its owner's scope.
Called by the broker's event handler in the event's transaction.

Accepting an attempt's files moves them from the attempt's staging directory
to their place on the SE (``ddm_bridge.se``); the staging directory of an
attempt whose files are refused is removed. A name registered already with
other content is refused with ``OUTPUT_NAME_TAKEN``, which is never retried.

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
from broker.protocol import JobEvent, JobSpec, TaskSpec
from broker.states import FINAL_STATES, JobState
from broker.store import datasets, job_files, subscriptions
from broker.store.datasets import FileRecord
from broker.store.jobs import spec_of
from broker.store.tasks import task_specs
from ddm_bridge.se import Checksum, accept, discard, output_scope, se_path, staging_dir

log = logging.getLogger(__name__)


def dataset_name(spec: JobSpec, role: str, task: TaskSpec | None) -> str:
    """The output or log dataset of a job: its task's, or its own when it has no task."""
    if task is None:
        return f"{spec.task_id or spec.id}.{role}"
    return task.output_dataset if role == "output" else task.log_dataset


@dataclass(frozen=True)
class AfterHolding:
    """Where a finished job goes from ``holding`` instead of ``finished``, with what values."""

    target: JobState
    values: dict[str, Any]


def register(
    conn: Connection, events: list[JobEvent], rows: dict[str, RowMapping], root: str, now: datetime
) -> dict[str, AfterHolding]:
    """Register the files each final event reports; the finished jobs that do not finish now."""
    after: dict[str, AfterHolding] = {}
    final = [e for e in events if e.kind in ("finished", "failed", "cancelled") and e.files]
    final = [e for e in final if JobState(rows[e.job_id]["state"]) not in FINAL_STATES]
    if not final:
        return after
    tasks = task_specs(conn, {t for e in final if (t := rows[e.job_id]["task_id"])})
    problems = _Registration(conn, rows, tasks, root, now).refusals(final)
    for event in final:
        problem = problems.get(event.job_id)
        if problem is not None:
            log.warning("job %s: outputs not registered: %s", event.job_id, problem.text)
            discard(root, rows[event.job_id]["site"], event.job_id, event.attempt)
            after[event.job_id] = AfterHolding(JobState.FAILED, _refusal(event, problem))
        elif event.kind == "finished" and _ship(conn, event, rows[event.job_id], now):
            after[event.job_id] = AfterHolding(
                JobState.TRANSFERRING, {"exit_code": event.exit_code}
            )
    return after


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
    """Registers the files of a batch's final events, in the event handler's transaction."""

    conn: Connection
    rows: dict[str, RowMapping]
    tasks: dict[str, TaskSpec]
    root: str
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
        placements: list[datasets.Placement] = []
        produced: list[tuple[str, int, dict[str, str]]] = []
        for event in events:
            row = self.rows[event.job_id]
            spec = spec_of(row)
            task = self.tasks.get(row["task_id"])
            _check_scope(event, output_scope(row["task_id"], row["owner"]))
            for role in ("output", "log"):
                records = [
                    FileRecord(f.scope, f.name, f.guid, f.size, f.adler32)
                    for f in event.files
                    if f.role == role
                ]
                placed = [
                    (r, str(se_path(self.root, row["site"], r.scope, r.name))) for r in records
                ]
                if placed:
                    name = dataset_name(spec, role, task)
                    placements.append(
                        datasets.Placement(name, placed, row["site"], role, spec.task_id)
                    )
            produced.append(
                (spec.id, event.attempt, {f"{f.scope}:{f.name}": f.role for f in event.files})
            )
        # A job retried by hand after its task's datasets were closed writes into
        # them again; they are closed again once it ends.
        datasets.reopen(self.conn, (p.dataset for p in placements), self.now)
        datasets.register_all(self.conn, placements, self.now)
        ids = datasets.files_by_did(self.conn, (d for _, _, files in produced for d in files))
        job_files.link_outputs(
            self.conn,
            [
                (job_id, attempt, {ids[d][0]: role for d, role in files.items()})
                for job_id, attempt, files in produced
            ],
        )
        for event in events:
            self._accept(event, self.rows[event.job_id]["site"])

    def _accept(self, event: JobEvent, site: str) -> None:
        """Move the attempt's staged files to their place on the SE; ``BadInput`` if one
        is not there."""
        staged = staging_dir(self.root, site, event.job_id, event.attempt)
        for f in event.files:
            destination = se_path(self.root, site, f.scope, f.name)
            problem = accept(staged / f.name, destination, Checksum(f.size, f.adler32))
            if problem is not None:
                raise BadInput(f"{f.scope}:{f.name} not accepted: {problem}")
        discard(self.root, site, event.job_id, event.attempt)


def _check_scope(event: JobEvent, scope: str) -> None:
    """Refuse files reported in a scope other than the job's own."""
    for f in event.files:
        if f.scope != scope:
            raise BadInput(f"{f.scope}:{f.name} is not in scope {scope}, the job's")
