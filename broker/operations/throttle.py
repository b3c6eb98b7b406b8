"""Throttling: which jobs may be activated at a site now, and which must wait.

A site's queue holds at most max(``throttle_min_activated``,
``throttle_running_factor`` * running) activated jobs; the rest wait in
``throttled``. Who goes first when there is less room than jobs: the
activity furthest below its share (``activity_shares``), and within an
activity the highest priority, then the oldest.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, RowMapping, func, select

from broker.operations.user_caps import Caps, UserCaps
from broker.settings import Settings
from broker.states import HELD_BY_PILOT, JobState
from broker.store.schema import jobs, sites

S = JobState

#: The states that count as running for the cap and as using an activity's share are
#: those of a job held by a pilot (``broker.states.HELD_BY_PILOT``).
#: The job columns activation and throttling read.
COLUMNS = (
    jobs.c.id,
    jobs.c.attempt,
    jobs.c.site,
    jobs.c.resource_type,
    jobs.c.priority,
    jobs.c.activity,
    jobs.c.owner,
)
#: A job as activation and throttling read it, the values of ``COLUMNS`` by name: read
#: from SQL, or a new job's before it is written (``broker.operations.intake``).
Row = RowMapping | Mapping[str, Any]
#: Activity of jobs that name none (and of rows written before activities).
DEFAULT_ACTIVITY = "production"


@dataclass(frozen=True)
class Limits:
    """The cap of activated jobs per site, the shares of the activities, and what users
    may take (``broker.operations.fairshare``, ``broker.operations.user_caps``; 0: no cap)."""

    min_activated: int = 20
    running_factor: float = 2.0
    shares: Mapping[str, float] = field(
        default_factory=lambda: {"production": 80.0, "analysis": 20.0}
    )
    priority_step: int = 5
    users: Caps = field(default_factory=Caps)

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        """The limits a deployment is configured with."""
        return cls(
            settings.throttle_min_activated,
            settings.throttle_running_factor,
            settings.shares(),
            settings.user_priority_step,
            Caps.of(settings),
        )

    def cap(self, running: int) -> int:
        """How many activated jobs a site with ``running`` jobs may hold."""
        return max(self.min_activated, math.ceil(self.running_factor * running))


@dataclass
class SiteUse:
    """What a site holds now: activated jobs, and activated plus running per activity."""

    activated: int = 0
    running: int = 0
    by_activity: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def lock_sites(conn: Connection, names: Iterable[str], skip_locked: bool = False) -> set[str]:
    """Serialise activation per site between broker processes (PostgreSQL row locks);
    the sites locked. With ``skip_locked``, a site another transaction holds is left out
    rather than waited for (SQLite, whose writers take turns: every site)."""
    wanted = sorted({name for name in names if name is not None})
    if not wanted or conn.dialect.name != "postgresql":
        return set(wanted)
    # FOR NO KEY UPDATE, not FOR UPDATE: it excludes another activation all the
    # same, but not the FOR KEY SHARE lock that writing a job, replica or
    # subscription at the site takes for its foreign key. With FOR UPDATE two
    # retries at one site each held that lock and waited for the other's.
    stmt = (
        select(sites.c.name)
        .where(sites.c.name.in_(wanted))
        .order_by(sites.c.name)
        .with_for_update(key_share=True, skip_locked=skip_locked)
    )
    return set(conn.scalars(stmt))


def site_use(conn: Connection, names: Iterable[str]) -> dict[str, SiteUse]:
    """Activated and running jobs of each of ``names``, per activity."""
    wanted = set(names)
    use = {name: SiteUse() for name in wanted}
    if not wanted:
        return use
    stmt = (
        select(jobs.c.site, jobs.c.state, jobs.c.activity, func.count())
        .where(jobs.c.site.in_(wanted), jobs.c.state.in_([S.ACTIVATED, *HELD_BY_PILOT]))
        .group_by(jobs.c.site, jobs.c.state, jobs.c.activity)
    )
    for site, state, activity, n in conn.execute(stmt):
        u = use[site]
        if state == S.ACTIVATED:
            u.activated += n
        else:
            u.running += n
        u.by_activity[activity or DEFAULT_ACTIVITY] += n
    return use


def room(use: SiteUse, limits: Limits) -> int:
    """How many more jobs the site's queue may take now."""
    return max(0, limits.cap(use.running) - use.activated)


def fair_order(rows: Sequence[Row], use: SiteUse, limits: Limits) -> list[Row]:
    """``rows`` (one site's) in the order they should be activated."""
    queues: dict[str, deque[Row]] = defaultdict(deque)
    for row in sorted(rows, key=lambda r: (-r["priority"], r["id"])):
        queues[row["activity"] or DEFAULT_ACTIVITY].append(row)
    taken = dict(use.by_activity)
    ordered: list[Row] = []
    while queues:
        activity = min(queues, key=lambda a: (_usage(a, taken, limits), -queues[a][0]["priority"]))
        ordered.append(queues[activity].popleft())
        taken[activity] = taken.get(activity, 0) + 1
        if not queues[activity]:
            del queues[activity]
    return ordered


def _usage(activity: str, taken: Mapping[str, int], limits: Limits) -> float:
    """Jobs per unit of share; an activity without a share gets the smallest one."""
    share = limits.shares.get(activity) or min(limits.shares.values(), default=1.0)
    return taken.get(activity, 0) / share


def split(
    conn: Connection,
    rows: Sequence[Row],
    limits: Limits,
    use: Mapping[str, SiteUse] | None = None,
) -> tuple[list[Row], dict[str, str]]:
    """The rows to activate now, and why each other one waits (by job id).

    ``use`` is what :func:`next_throttled` counted with the sites locked; without
    it the sites are locked and counted here.
    """
    by_site: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_site[row["site"]].append(row)
    if use is None:
        lock_sites(conn, by_site)
        use = site_use(conn, by_site)
    caps = _caps(conn, limits)
    go: list[Row] = []
    wait: dict[str, str] = {}
    for site, group in by_site.items():
        u = use[site]
        n = room(u, limits)
        ordered = fair_order(group, u, limits)
        if caps is not None:
            ordered, held_by_user = caps.admit(site, ordered, n)
            wait |= held_by_user
        go += ordered[:n]
        held = u.activated + min(n, len(ordered))
        why = f"site {site} queue full: {held} activated, cap {limits.cap(u.running)}"
        wait |= {r["id"]: why for r in ordered[n:]}
    return go, wait


def _caps(conn: Connection, limits: Limits) -> UserCaps | None:
    """Users' caps for one transaction's activations; None when users have none."""
    return UserCaps(conn, limits.users) if limits.users.running else None


def next_throttled(
    conn: Connection, limits: Limits, site_names: Iterable[str] = (), skip_locked: bool = False
) -> tuple[list[Row], dict[str, SiteUse]]:
    """The throttled jobs that could be activated now: for each site with room, as many
    of each activity's first ones (priority, then age) as there is room; and what
    each of those sites holds, counted with the sites locked (for :func:`split`).
    With ``skip_locked``, a site another transaction holds is left out, not waited for."""
    stmt = select(jobs.c.site, jobs.c.activity).where(jobs.c.state == S.THROTTLED).distinct()
    wanted = set(site_names)
    if wanted:
        stmt = stmt.where(jobs.c.site.in_(wanted))
    # Locked before the jobs are picked, so that a second broker process never picks
    # the same jobs. The release after claims waits for a site another transaction
    # holds: that one counted the site's queue before these claims made room in it,
    # so skipping would leave the room empty until the next claim, and a job of lower
    # priority already queued would be claimed before a higher one still throttled.
    # The periodic release skips it (``skip_locked``): the claims' release follows.
    found = list(conn.execute(stmt))
    with_throttled = lock_sites(conn, {site for site, _ in found}, skip_locked=skip_locked)
    pairs = [(site, activity) for site, activity in found if site in with_throttled]
    use = site_use(conn, with_throttled)
    rows: list[Row] = []
    caps = _caps(conn, limits)
    for site, activity in pairs:
        n = room(use[site], limits)
        if n:
            rows += _first_throttled(conn, site, activity, n, caps)
    return rows, use


#: How many times the first throttled jobs of a site are read again, leaving out users
#: found at their caps (each read finds more of them, or is the last).
CAP_READS = 3


def _first_throttled(
    conn: Connection, site: str, activity: str | None, n: int, caps: UserCaps | None
) -> list[Row]:
    """The first ``n`` throttled jobs of an activity at a site, in release order, of
    users not at their caps."""
    stmt = (
        select(*COLUMNS)
        .where(
            jobs.c.site == site,
            jobs.c.activity.is_(None) if activity is None else jobs.c.activity == activity,
            jobs.c.state == S.THROTTLED,
        )
        .order_by(jobs.c.priority.desc(), jobs.c.id)
        .limit(n)
    )
    left_out: set[str] = set()
    for _ in range(CAP_READS):
        where = jobs.c.owner.is_(None) | jobs.c.owner.not_in(sorted(left_out))
        rows: list[Row] = list(conn.execute(stmt.where(where) if left_out else stmt).mappings())
        full = set() if caps is None else caps.full(site, {r["owner"] for r in rows}) - left_out
        if not full:
            break
        left_out |= full
    return rows
