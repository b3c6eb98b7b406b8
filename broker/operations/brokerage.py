"""Brokerage in the broker service: the catalogue and each site's load from SQL,
the rules of ``broker.brokerage.rules``, and a record on every job placed.

Jobs of one batch are brokered one after the other, each counting as queued
at its site for the next, so a batch spreads over sites as its weights
change instead of all landing on the site that was best at the start.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select

from broker.brokerage.exclusion import AUTOMATIC, ExclusionPolicy, Probation, task_exclusion
from broker.brokerage.rules import Decision, LeftOut, Load, Needs, choose
from broker.error_codes import BrokerageError, ErrorFamily
from broker.operations.activation import Placement
from broker.operations.setup import set_up
from broker.operations.throttle import Limits
from broker.operations.user_caps import Caps, QueuedPerSiteCap
from broker.protocol import JobSpec
from broker.settings import Settings
from broker.states import HELD_BY_PILOT, QUEUED, JobState
from broker.store import transitions
from broker.store.clock import as_utc, now
from broker.store.datasets import file_replicas
from broker.store.schema import jobs
from broker.store.site_status import statuses, task_outcomes
from broker.store.sites import site_configs
from broker.store.transitions import Change

log = logging.getLogger(__name__)

S = JobState


def site_loads(conn: Connection, names: Iterable[str]) -> dict[str, Load]:
    """Queued and running jobs of each of the sites ``names``."""
    loads = {name: Load() for name in names}
    if not loads:
        return loads
    stmt = (
        select(jobs.c.site, jobs.c.state, func.count())
        .where(jobs.c.site.in_(list(loads)), jobs.c.state.in_([*QUEUED, *HELD_BY_PILOT]))
        .group_by(jobs.c.site, jobs.c.state)
    )
    for site, state, n in conn.execute(stmt):
        load = loads[site]
        if state in HELD_BY_PILOT:
            load.running += n
        else:
            load.queued += n
    return loads


@dataclass
class Brokerage:
    """Decides sites for the jobs of one transaction."""

    conn: Connection
    data_weight: float
    #: A task's failures at a site that leave the site out for the task.
    exclusion: ExclusionPolicy = field(default_factory=ExclusionPolicy)
    #: How many probe jobs a site the automatic rule put in ``test`` takes at once.
    probe_jobs: int = 2
    #: Users' caps; brokerage keeps to their queued jobs per site.
    caps: Caps = field(default_factory=Caps)

    @classmethod
    def of(cls, conn: Connection, settings: Settings) -> Brokerage:
        """Brokerage with the settings' weights, exclusions and users' caps."""
        policy = exclusion_policy(settings)
        return cls(
            conn,
            settings.brokerage_data_weight,
            policy,
            settings.site_probe_jobs,
            Caps.of(settings),
        )

    def __post_init__(self) -> None:
        self._now = now()
        self._catalogue = site_configs(self.conn)
        self._probation = probations(self.conn, self.probe_jobs, self._now)
        self._excluded: dict[str, dict[str, str]] = {}
        # Counted for the sites a job may go to, when one first may: a backlog at
        # other sites costs nothing (a submission batch names its sites).
        self._loads: dict[str, Load] = {}
        self._files: dict[str, tuple[int, set[str]]] = {}
        self._looked_up: set[str] = set()
        self._per_site = QueuedPerSiteCap(self.conn, self.caps)

    def _look_up(self, specs: Iterable[JobSpec]) -> None:
        """Where the input files of ``specs`` have replicas, in one query per slice of
        files rather than one per job."""
        dids = {d for s in specs for d in s.input_files} - self._looked_up
        if dids:
            self._files |= file_replicas(self.conn, dids)
            self._looked_up |= dids

    def _count(self, names: Iterable[str]) -> None:
        """Count the load of those of ``names`` not counted yet."""
        new = set(names) - self._loads.keys()
        if new:
            self._loads |= site_loads(self.conn, new)

    def replica_sites(self, did: str) -> set[str]:
        """The sites with an available replica of a file (DID) looked up for placing jobs."""
        return self._files[did][1] if did in self._files else set()

    def files(self) -> dict[str, tuple[int, set[str]]]:
        """What the catalogue knows of the files (DIDs) looked up for placing jobs: the id
        of each registered one and the sites with an available replica."""
        return self._files

    def file_ids(self) -> dict[str, int]:
        """The id of each registered file (DID) looked up for placing jobs."""
        return {did: file_id for did, (file_id, _) in self._files.items()}

    def locality(self, files: list[str]) -> dict[str, float]:
        """The fraction of ``files`` (DIDs) with an available replica at each site."""
        counts: dict[str, int] = defaultdict(int)
        for did in files:
            for site in self.replica_sites(did):
                counts[site] += 1
        return {site: n / len(files) for site, n in counts.items()}

    def decide(
        self, spec: JobSpec, exclude: Iterable[str] = (), owner: str | None = None
    ) -> Decision:
        """Where ``spec`` goes; the chosen site counts one more queued job afterwards.

        With the job's ``owner`` (a new submission), sites where the user has
        ``user_max_queued_per_site`` queued jobs are refused it.
        """
        needs = Needs.of(spec)
        left_out = set(exclude)
        sites = [s for s in needs.candidates(self._catalogue) if s.name not in left_out]
        self._count([s.name for s in sites])
        self._look_up([spec])
        data = self.locality(spec.input_files) if spec.input_files else {}
        left = LeftOut(self._probation, self._task_exclusions(spec.task_id))
        refused = self._per_site.full_sites(owner, [s.name for s in sites])
        decision = choose(needs, sites, self._loads, data, self.data_weight, left, refused)
        if decision.site is not None:
            self._loads.setdefault(decision.site, Load()).queued += 1
            self._per_site.placed(owner, decision.site)
        return decision

    def _task_exclusions(self, task_id: str | None) -> dict[str, str]:
        """Why each site is left out for the jobs of ``task_id`` (looked up once per task)."""
        if task_id is None:
            return {}
        if task_id not in self._excluded:
            cutoff = self._now - timedelta(seconds=self.exclusion.window_s)
            outcomes = task_outcomes(self.conn, task_id, cutoff)
            reasons = {s: task_exclusion(task_id, o, self.exclusion) for s, o in outcomes.items()}
            self._excluded[task_id] = {s: r for s, r in reasons.items() if r is not None}
        return self._excluded[task_id]

    def place(
        self,
        specs: Iterable[JobSpec],
        attempt: int = 1,
        owners: Mapping[str, str | None] | None = None,
    ) -> tuple[list[Placement], list[Unplaced]]:
        """Decide a site for each job (of its ``owners`` by job id, for new submissions),
        highest priority first; (placed, unplaced)."""
        owners = owners or {}
        placed, unplaced = [], []
        ordered = sorted(specs, key=lambda s: -s.priority)
        self._look_up(ordered)
        # Every site any of them may go to, counted at once rather than job by job.
        asked = {Needs(site=spec.site, sites=tuple(spec.sites)) for spec in ordered}
        self._count(c.name for needs in asked for c in needs.candidates(self._catalogue))
        for spec in ordered:
            decision = self.decide(spec, owner=owners.get(spec.id))
            if decision.site is None:
                unplaced.append(Unplaced(spec, attempt, decision))
            else:
                placed.append(
                    Placement(spec, attempt, decision.site, decision.why, decision.record())
                )
        return placed, unplaced


def exclusion_policy(settings: Settings) -> ExclusionPolicy:
    """When a task's failures at a site leave the site out for the task, from the settings."""
    return ExclusionPolicy(
        settings.exclusion_min_failures,
        settings.exclusion_failure_ratio,
        settings.exclusion_window_s,
    )


def probations(conn: Connection, probe_jobs: int, t: datetime) -> dict[str, Probation]:
    """The sites the automatic rule put in ``test``, as brokerage sends them probe jobs."""
    found = {}
    for row in statuses(conn):
        if row["status"] != "test" or row["status_by"] != AUTOMATIC:
            continue
        probe_at = as_utc(row["probe_at"]) if row["probe_at"] else None
        since = as_utc(row["status_at"]) if row["status_at"] else t
        paused = probe_at if probe_at is not None and probe_at > t else None
        found[row["name"]] = Probation(probe_jobs, since, row["status_reason"] or "", paused)
    return found


@dataclass(frozen=True)
class Unplaced:
    """A job attempt in ``defined`` that brokerage found no site for."""

    spec: JobSpec
    attempt: int
    decision: Decision

    def failure(self) -> dict[str, Any]:
        """The columns set as it fails: the brokerage error, and brokerage's reasons."""
        return {
            "error_family": ErrorFamily.BROKERAGE.value,
            "error_code": int(BrokerageError.NO_SITE),
            "diagnostic": self.decision.why,
            "brokerage": self.decision.record(),
        }


def fail_unplaced(conn: Connection, unplaced: Iterable[Unplaced], now: datetime) -> int:
    """``defined → failed`` with the brokerage error and its reasons; how many."""
    changes = [
        Change(u.spec.id, u.attempt, S.DEFINED, S.FAILED, reason=u.decision.why, values=u.failure())
        for u in unplaced
    ]
    applied = transitions.apply(conn, changes, now)
    for change in applied:
        failed_brokerage(change.job_id, change.reason)
    return len(applied)


def failed_brokerage(job_id: str, why: str | None) -> None:
    """Log a job that no site fits."""
    log.warning("job %s failed brokerage: %s", job_id, why)


def settle(
    conn: Connection,
    placed: list[Placement],
    unplaced: list[Unplaced],
    limits: Limits,
    now: datetime,
) -> set[str]:
    """Set up the placed ``defined`` attempts (assigned; activated or throttled when
    their inputs are at the site), fail the unplaced ones; the sites that got jobs."""
    set_up(conn, placed, now, limits)
    fail_unplaced(conn, unplaced, now)
    return {p.site for p in placed}
