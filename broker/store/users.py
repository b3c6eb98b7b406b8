"""Users' jobs in SQL, counted: what fair share and users' caps go by.

A user is a job's ``owner``, the validated ``user_id`` of its submission.
Every count reads the index on (state, owner, priority), one range per state (the
live states only: a user's finished jobs are never read), or a site's jobs in a state.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, func, select

from broker.states import HELD_BY_PILOT, QUEUED, JobState
from broker.store.schema import jobs

S = JobState

#: A user's jobs not in a site's queue yet (queued, but not activated): their priority
#: is the user's fair share's.
WAITING = tuple(s for s in QUEUED if s != S.ACTIVATED)
#: A user's jobs ahead of its waiting ones: in a site's queue (activated), or held by
#: a pilot there.
AHEAD = (S.ACTIVATED, *HELD_BY_PILOT)


@dataclass
class UserUse:
    """A user's live jobs, by what they count for."""

    waiting: int = 0
    activated: int = 0
    running: int = 0

    @property
    def ahead(self) -> int:
        """Jobs ahead of the user's waiting ones: activated or running."""
        return self.activated + self.running

    @property
    def queued(self) -> int:
        """Jobs no pilot has taken yet: waiting or activated."""
        return self.waiting + self.activated


def user_use(conn: Connection, owners: Iterable[str | None] | None = None) -> dict[str, UserUse]:
    """The live jobs of each of ``owners`` (of every user with any, when None)."""
    stmt = select(jobs.c.owner, jobs.c.state, func.count()).where(
        jobs.c.state.in_([*WAITING, *AHEAD]), jobs.c.owner.is_not(None)
    )
    if owners is not None:
        wanted = sorted({o for o in owners if o is not None})
        if not wanted:
            return {}
        stmt = stmt.where(jobs.c.owner.in_(wanted))
    use: dict[str, UserUse] = defaultdict(UserUse)
    for owner, state, n in conn.execute(stmt.group_by(jobs.c.owner, jobs.c.state)):
        u = use[owner]
        if state in WAITING:
            u.waiting += n
        elif state == S.ACTIVATED:
            u.activated += n
        else:
            u.running += n
    return dict(use)


def ahead_at(
    conn: Connection, sites: Iterable[str], owners: Iterable[str]
) -> dict[tuple[str, str], int]:
    """Activated and running jobs of each of ``owners`` at each of ``sites``."""
    return _at_sites(conn, sites, owners, AHEAD)


def queued_at(
    conn: Connection, sites: Iterable[str], owners: Iterable[str]
) -> dict[tuple[str, str], int]:
    """Queued jobs (waiting or activated) of each of ``owners`` at each of ``sites``."""
    return _at_sites(conn, sites, owners, (*WAITING, S.ACTIVATED))


def _at_sites(
    conn: Connection, sites: Iterable[str], owners: Iterable[str], states: Iterable[JobState]
) -> dict[tuple[str, str], int]:
    wanted, who = sorted(set(sites)), sorted(set(owners))
    if not wanted or not who:
        return {}
    stmt = (
        select(jobs.c.site, jobs.c.owner, func.count())
        .where(jobs.c.site.in_(wanted), jobs.c.state.in_(list(states)), jobs.c.owner.in_(who))
        .group_by(jobs.c.site, jobs.c.owner)
    )
    return {(site, owner): n for site, owner, n in conn.execute(stmt)}


#: Users the monitor and ``pandamq top`` list: those with the most queued jobs.
USERS_SHOWN = 20


def usage(conn: Connection, limit: int | None = USERS_SHOWN) -> list[dict[str, int | str | None]]:
    """Each user's live jobs, the most queued first: waiting, activated, running,
    queued (waiting and activated), and ``priority``, the highest of its waiting jobs
    (the next one its fair share releases; None with none waiting). All users when
    ``limit`` is None."""
    stmt = (
        select(jobs.c.owner, jobs.c.state, func.count(), func.max(jobs.c.priority))
        .where(jobs.c.state.in_([*WAITING, *AHEAD]), jobs.c.owner.is_not(None))
        .group_by(jobs.c.owner, jobs.c.state)
    )
    use: dict[str, UserUse] = defaultdict(UserUse)
    top: dict[str, int] = {}
    for owner, state, n, highest in conn.execute(stmt):
        u = use[owner]
        if state in WAITING:
            u.waiting += n
            top[owner] = max(top.get(owner, highest), highest)
        elif state == S.ACTIVATED:
            u.activated += n
        else:
            u.running += n
    ordered = sorted(use.items(), key=lambda item: (-item[1].queued, -item[1].running, item[0]))
    return [
        {
            "user": owner,
            "waiting": u.waiting,
            "activated": u.activated,
            "running": u.running,
            "queued": u.queued,
            "priority": top.get(owner),
        }
        for owner, u in (ordered if limit is None else ordered[:limit])
    ]
