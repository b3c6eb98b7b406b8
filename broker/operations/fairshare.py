"""Users treated fairly: a user's jobs lose priority as the user's jobs ahead grow.

PanDA's rule: a user's n-th waiting job (n from 0, the user's waiting jobs in
order of their submitted priority, then age) gets

    priority = base - (ahead + n) // user_priority_step

where *base* is the priority the job was submitted with (``jobs.base_priority``) and *ahead* counts
the user's jobs already activated or running. A new job gets it at
submission, behind the user's jobs already waiting; a periodic pass
(:class:`UserPriorities`, every ``brokerage_interval_s``) computes it again,
one UPDATE per user with waiting jobs, so that as a user's earlier jobs end
the later ones move up. Throttled jobs are released by that priority within
each activity's share (``broker.operations.throttle``), so a user with a
backlog of 10,000 jobs does not hold back another user's first jobs.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence

from sqlalchemy import Connection, Engine, func, select, update

from broker.protocol import JobSpec
from broker.settings import Settings
from broker.store.engine import transaction
from broker.store.schema import jobs
from broker.store.users import WAITING, UserUse, user_use

log = logging.getLogger(__name__)


def penalty(ahead: int, n: int, step: int) -> int:
    """How much priority a user's n-th waiting job loses with ``ahead`` jobs before it."""
    return (ahead + n) // step if step else 0


def new_priorities(
    conn: Connection, specs: Sequence[JobSpec], owners: Mapping[str, str | None], step: int
) -> dict[str, int]:
    """The priority of each new job (by id): its user's jobs already waiting and ahead
    come first, then the new ones by submitted priority, then id (the periodic pass's
    order for jobs submitted at one time)."""
    if not step:
        return {s.id: s.priority for s in specs}
    by_owner: dict[str | None, list[JobSpec]] = defaultdict(list)
    for spec in specs:
        by_owner[owners.get(spec.id)].append(spec)
    use = user_use(conn, by_owner)
    found: dict[str, int] = {}
    for owner, mine in by_owner.items():
        u = use.get(owner, UserUse()) if owner is not None else None
        ordered = sorted(mine, key=lambda s: (-s.priority, s.id))
        for n, spec in enumerate(ordered):
            lost = penalty(u.ahead, u.waiting + n, step) if u is not None else 0
            found[spec.id] = spec.priority - lost
    return found


#: How many of a user's waiting jobs, the first, each pass computes again. Deeper ones
#: keep the lower priority they were given until they come within these: their order
#: behind the user's first ones is right already, and a pass writes at most this many
#: rows per user however long the backlog.
FRONT = 2000


def reprioritise(conn: Connection, owner: str, ahead: int, step: int) -> int:
    """Compute the priority of ``owner``'s first waiting jobs again, in one UPDATE; how
    many changed (rows whose priority is right already are not written)."""
    base = func.coalesce(jobs.c.base_priority, jobs.c.priority)
    n = func.row_number().over(order_by=(base.desc(), jobs.c.created_at, jobs.c.id)) - 1
    ranked = (
        select(jobs.c.id, n.label("n"), (base - (ahead + n) // step).label("priority"))
        .where(jobs.c.owner == owner, jobs.c.state.in_(WAITING))
        .subquery()
    )
    stmt = (
        update(jobs)
        .where(
            jobs.c.id == ranked.c.id,
            ranked.c.n < FRONT,
            jobs.c.priority != ranked.c.priority,
        )
        .values(priority=ranked.c.priority)
    )
    return int(conn.execute(stmt).rowcount or 0)


class UserPriorities:
    """The periodic pass of the broker service that keeps users' priorities current."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self._engine = engine
        self._step = settings.user_priority_step

    def check(self) -> int:
        """One pass: every user with waiting jobs; how many jobs changed priority."""
        if not self._step:
            return 0
        with transaction(self._engine) as conn:
            use = user_use(conn)
        changed = 0
        # A transaction per user: row locks on one user's jobs at a time.
        for owner, u in sorted(use.items()):
            if u.waiting:
                with transaction(self._engine) as conn:
                    changed += reprioritise(conn, owner, u.ahead, self._step)
        if changed:
            log.info("user priorities: %d waiting job(s) moved", changed)
        return changed
