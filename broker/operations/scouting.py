"""Scout jobs: a task's first jobs run before the others, which are tuned from them.

A task with scouts stores its first ``scouts`` jobs as usual, at a higher
priority, and the others ``pending`` (held back from brokerage:
``broker.operations.scouts``); its status is ``scouting``. When every scout has
ended, the others get the memory and walltime tuned from what the finished
ones used (``broker.operations.tuning``), and are brokered; the task is
``running`` and is tuned again as more of its jobs finish. A task whose
scouts all failed, or whose jobs ran out of memory at the largest memory any
of its sites offers ``exhaust_memory_failures`` times, is ``exhausted`` with
the reason: its jobs that no pilot holds are held ``pending``, not burned,
until ``pandamq retry --task`` resumes it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, bindparam, select, update

from broker.api import TaskTuning
from broker.brokerage.rules import Needs
from broker.error_codes import PilotError
from broker.metrics import TASK_SCOUTING
from broker.operations.activation import Placement
from broker.operations.brokerage import Brokerage, Unplaced, settle
from broker.operations.scouts import SCOUTING
from broker.operations.throttle import Limits
from broker.operations.tuning import record, tune
from broker.protocol import JobEvent, JobSpec, TaskSpec
from broker.settings import Settings
from broker.states import FINAL_STATES, QUEUED, JobState
from broker.store import measures, transitions
from broker.store.jobs import spec_of
from broker.store.schema import jobs, tasks
from broker.store.sites import site_configs
from broker.store.transitions import Change
from broker.topology import resource_type

log = logging.getLogger(__name__)

S = JobState

EXHAUSTED = "exhausted"


class Scouting:
    """Measures, tuning and exhaustion of tasks, after their jobs' events or a retry."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._limits = Limits.of(settings)

    def after_events(
        self,
        conn: Connection,
        events: Sequence[JobEvent],
        rows: Mapping[str, RowMapping],
        t: datetime,
    ) -> None:
        """Record what the ended attempts used; exhaust or tune their tasks."""
        ended = [e for e in events if e.kind in ("finished", "failed") and e.job_id in rows]
        if not ended:
            return
        measures.record(conn, [_use(e, rows[e.job_id]) for e in ended])
        task_ids = {rows[e.job_id]["task_id"] for e in ended} - {None}
        if task_ids:
            self.review(conn, task_ids, t, _out_of_memory(ended, rows))

    def review(
        self,
        conn: Connection,
        task_ids: Iterable[str],
        t: datetime,
        out_of_memory: Mapping[str, int] | None = None,
    ) -> None:
        """Exhaust, release or tune again each task of ``task_ids`` as its jobs stand;
        ``out_of_memory``: the memory of attempts that just ran out of it, by task."""
        stmt = select(tasks).where(
            tasks.c.id.in_(sorted(set(task_ids))), tasks.c.status.in_((SCOUTING, "running"))
        )
        for task in conn.execute(stmt).mappings().all():
            if self._memory_exhausted(conn, task, (out_of_memory or {}).get(task["id"]), t):
                continue
            if task["status"] == SCOUTING:
                self._scouted(conn, _locked(conn, task), t)
            elif task["tuning"] is not None and _grown(conn, task):
                self._tune(conn, task, t, release=False)

    def resume(
        self, conn: Connection, task_ids: Iterable[str], t: datetime, by: str | None
    ) -> list[str]:
        """Exhausted tasks of ``task_ids`` go on: scouting again if none of their jobs
        finished, else running with their held jobs released; the tasks resumed."""
        stmt = select(tasks).where(
            tasks.c.id.in_(sorted(set(task_ids))), tasks.c.status == EXHAUSTED
        )
        resumed = []
        for task in conn.execute(stmt).mappings().all():
            tuned = measures.finished_count(conn, task["id"]) > 0
            status = "running" if tuned or not task["scouts"] else SCOUTING
            why = f"resumed by {by or 'a person'} (was exhausted: {task['reason']})"
            TASK_SCOUTING.labels(outcome="resumed").inc()
            _set(conn, task["id"], status=status, reason=why)
            log.info("task %s: %s, now %s", task["id"], why, status)
            if status == "running":
                self._tune(conn, task, t, release=True)
            resumed.append(task["id"])
        return resumed

    # --- the steps

    def _scouted(self, conn: Connection, task: RowMapping | None, t: datetime) -> None:
        """Once every scout has ended: tune and release the others, or exhaust the task."""
        if task is None or task["status"] != SCOUTING:
            return
        ids = [f"{task['id']}-{n:06d}" for n in range(1, task["scouts"] + 1)]
        stmt = select(jobs.c.id, jobs.c.state, jobs.c.diagnostic).where(jobs.c.id.in_(ids))
        scouts = conn.execute(stmt).all()
        if any(s.state not in FINAL_STATES for s in scouts):
            return
        if not any(s.state == S.FINISHED for s in scouts):
            last = next((s for s in scouts if s.diagnostic), None)
            detail = f"; job {last.id}: {last.diagnostic}" if last is not None else ""
            self._exhaust(conn, task["id"], f"all {len(scouts)} scout job(s) failed{detail}", t)
            return
        _set(conn, task["id"], status="running")
        self._tune(conn, task, t, release=True)

    def _tune(self, conn: Connection, task: RowMapping, t: datetime, release: bool) -> None:
        """Tune the task from its finished jobs; with ``release``, broker its held jobs."""
        s = self._settings
        found = tune(
            measures.finished(conn, task["id"]),
            s.tuning_percentile,
            s.tuning_memory_margin,
            s.tuning_walltime_margin,
        )
        if found is None:
            if release:
                self._release(conn, task["id"], None, t)
            return
        largest = _largest_memory(conn, _task_spec(task))
        if largest is not None and found.memory_mb is not None and found.memory_mb > largest:
            if (found.peak_rss_mb or 0) > largest:
                why = (
                    f"its jobs use {found.peak_rss_mb} MB (percentile {found.percentile:g}), "
                    f"more than the largest memory its sites offer, {largest} MB"
                )
                self._exhaust(conn, task["id"], why, t)
                return
            found = dataclasses.replace(found, memory_mb=largest)
        _set(conn, task["id"], tuning=record(found))
        TASK_SCOUTING.labels(outcome="tuned" if release else "retuned").inc()
        if release:
            self._release(conn, task["id"], found, t)
        else:
            _retune_throttled(conn, task["id"], found)

    def _release(
        self, conn: Connection, task_id: str, tuning: TaskTuning | None, t: datetime
    ) -> None:
        """``pending → defined`` with the tuned requests (if any), then brokered."""
        rows = _jobs_in(conn, task_id, (S.PENDING,))
        why = f"released: {_describe(tuning)}"
        changes = [Change(r["id"], r["attempt"], S.PENDING, S.DEFINED, reason=why) for r in rows]
        applied = {c.job_id for c in transitions.apply(conn, changes, t)}
        chosen = [(r, _tuned(spec_of(r), tuning)) for r in rows if r["id"] in applied]
        _store_specs(conn, [spec for _, spec in chosen])
        brokerage = Brokerage.of(conn, self._settings)
        placed, unplaced = [], []
        for row, spec in sorted(chosen, key=lambda c: -c[1].priority):
            choice = brokerage.decide(spec)
            if choice.site is None:
                unplaced.append(Unplaced(spec, row["attempt"], choice))
            else:
                why = f"{choice.why}; {_describe(tuning)}"
                placed.append(Placement(spec, row["attempt"], choice.site, why, choice.record()))
        settle(conn, placed, unplaced, self._limits, t)
        log.info("task %s: %d job(s) released (%s)", task_id, len(chosen), _describe(tuning))

    def _memory_exhausted(
        self, conn: Connection, task: RowMapping, memory_mb: int | None, t: datetime
    ) -> bool:
        """Exhaust the task if its jobs ran out of memory at the largest its sites offer
        often enough; whether it was."""
        if memory_mb is None:
            return False
        largest = _largest_memory(conn, _task_spec(task))
        if largest is None or memory_mb < largest:
            return False
        count = measures.out_of_memory_at(conn, task["id"], largest)
        if count < self._settings.exhaust_memory_failures:
            return False
        why = (
            f"{count} job(s) ran out of memory at {largest} MB, "
            "the largest memory any of its sites offers"
        )
        self._exhaust(conn, task["id"], why, t)
        return True

    def _exhaust(self, conn: Connection, task_id: str, why: str, t: datetime) -> None:
        """The task is exhausted: its jobs that no pilot holds wait ``pending``."""
        _set(conn, task_id, status=EXHAUSTED, reason=why)
        TASK_SCOUTING.labels(outcome="exhausted").inc()
        rows = _jobs_in(conn, task_id, QUEUED)
        held = f"held: the task is exhausted ({why})"
        changes = [
            Change(r["id"], r["attempt"], S(r["state"]), S.PENDING, reason=held) for r in rows
        ]
        applied = transitions.apply(conn, changes, t)
        log.warning("task %s exhausted: %s; %d job(s) held", task_id, why, len(applied))


def scouting_tasks(conn: Connection) -> list[str]:
    """The tasks whose scouts run."""
    return list(conn.execute(select(tasks.c.id).where(tasks.c.status == SCOUTING)).scalars())


def _locked(conn: Connection, task: RowMapping) -> RowMapping | None:
    """A scouting task's row again, locked until the transaction ends (PostgreSQL), so
    that two broker processes each ending one of its last scouts do not both miss the
    other's (the periodic review would catch that too, later) nor both release it."""
    if conn.dialect.name != "postgresql":
        return task
    stmt = select(tasks).where(tasks.c.id == task["id"]).with_for_update()
    return conn.execute(stmt).mappings().first()


def _grown(conn: Connection, task: RowMapping) -> bool:
    """Whether a tuned task's finished jobs have doubled since it was tuned: then it is
    tuned again (so that a task of n jobs is tuned about log2(n) times, not n)."""
    return measures.finished_count(conn, task["id"]) >= 2 * int(task["tuning"]["jobs"])


def _retune_throttled(conn: Connection, task_id: str, tuning: TaskTuning) -> None:
    """The task's ``throttled`` jobs (placed, not in a queue yet) get the new tuning,
    those whose site still has a slot for it."""
    catalogue = site_configs(conn)
    changed = []
    for row in _jobs_in(conn, task_id, (S.THROTTLED,)):
        old = spec_of(row)
        spec = _tuned(old, tuning)
        site = catalogue.get(row["site"])
        slots = None if site is None else site.slots
        fits = slots is None or any(s.fits(spec.cores, spec.memory_mb) for s in slots)
        if spec != old and fits:
            changed.append(spec)
    _store_specs(conn, changed)
    if changed:
        log.info("task %s: %d throttled job(s) %s", task_id, len(changed), _describe(tuning))


def _use(event: JobEvent, row: RowMapping) -> dict[str, Any]:
    """An ended attempt's row of use: what it asked for and what its payload used."""
    outputs = [f.size for f in event.files if f.role == "output"]
    return {
        "job_id": event.job_id,
        "attempt": event.attempt,
        "memory_mb": spec_of(row).memory_mb,
        "peak_rss_mb": event.peak_rss_mb,
        "cpu_time_s": event.cpu_time_s,
        "wall_time_s": event.wall_time_s,
        "output_bytes": sum(outputs) if outputs else None,
    }


def _out_of_memory(events: Sequence[JobEvent], rows: Mapping[str, RowMapping]) -> dict[str, int]:
    """The largest memory asked by an attempt that ran out of it, by task."""
    found: dict[str, int] = {}
    for e in events:
        task_id = rows[e.job_id]["task_id"]
        if e.error_code == PilotError.OUT_OF_MEMORY and task_id:
            memory = spec_of(rows[e.job_id]).memory_mb
            found[task_id] = max(found.get(task_id, 0), memory)
    return found


def _task_spec(task: RowMapping) -> TaskSpec | None:
    return TaskSpec(**task["spec"]) if task["spec"] else None


def _largest_memory(conn: Connection, spec: TaskSpec | None) -> int | None:
    """The largest memory a slot of the task's sites offers; None: not limited."""
    needs = Needs(sites=tuple(spec.sites) if spec else ())
    sites = needs.candidates(site_configs(conn))
    if not sites or any(s.slots is None for s in sites):
        return None
    return max((slot.memory_mb for s in sites for slot in s.slots or ()), default=None)


def _tuned(spec: JobSpec, tuning: TaskTuning | None) -> JobSpec:
    if tuning is None:
        return spec
    return dataclasses.replace(
        spec,
        memory_mb=tuning.memory_mb or spec.memory_mb,
        walltime_s=tuning.walltime_s or spec.walltime_s,
    )


def _describe(tuning: TaskTuning | None) -> str:
    if tuning is None:
        return "not tuned: no job of the task finished"
    memory = "memory as asked" if tuning.memory_mb is None else f"{tuning.memory_mb} MB"
    walltime = "walltime as asked" if tuning.walltime_s is None else f"{tuning.walltime_s} s"
    return (
        f"tuned to {memory} and {walltime} from {tuning.jobs} finished job(s), "
        f"percentile {tuning.percentile:g}"
    )


def _jobs_in(conn: Connection, task_id: str, states: Iterable[JobState]) -> list[RowMapping]:
    stmt = select(jobs).where(
        jobs.c.task_id == task_id, jobs.c.state.in_([s.value for s in states])
    )
    if conn.dialect.name == "postgresql":
        stmt = stmt.order_by(jobs.c.id).with_for_update(skip_locked=True)
    return list(conn.execute(stmt).mappings())


def _store_specs(conn: Connection, specs: Sequence[JobSpec]) -> None:
    if specs:
        conn.execute(
            update(jobs)
            .where(jobs.c.id == bindparam("b_id"))
            .values(spec=bindparam("b_spec"), resource_type=bindparam("b_rtype")),
            [
                {
                    "b_id": s.id,
                    "b_spec": dataclasses.asdict(s),
                    "b_rtype": resource_type(s.cores, s.memory_mb),
                }
                for s in specs
            ],
        )


def _set(conn: Connection, task_id: str, **values: Any) -> None:
    conn.execute(update(tasks).where(tasks.c.id == task_id).values(**values))
