"""Users treated fairly: priorities that fall with a user's jobs ahead, and users' caps."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select

from broker.errors import ConfigError
from broker.operations.activation import release
from broker.operations.brokerage import Brokerage
from broker.operations.fairshare import UserPriorities, new_priorities, reprioritise
from broker.operations.throttle import Limits, split
from broker.operations.user_caps import Caps, QueuedCap
from broker.protocol import JobSpec
from broker.settings import Settings
from broker.states import JobState
from broker.store import transitions
from broker.store.clock import now
from broker.store.engine import transaction
from broker.store.schema import jobs
from broker.store.transitions import Change
from broker.store.users import user_use
from tests.broker.service.jobs import TO_RUNNING, TO_THROTTLED, a_site, a_user, put

S = JobState


def priorities(engine: Engine, ids: list[str]) -> list[int]:
    with transaction(engine) as conn:
        stmt = select(jobs.c.id, jobs.c.priority).where(jobs.c.id.in_(ids))
        found = {r.id: r.priority for r in conn.execute(stmt)}
    return [found[i] for i in ids]


def finish(engine: Engine, ids: list[str]) -> None:
    with transaction(engine) as conn:
        transitions.apply(conn, [Change(i, 1, S.RUNNING, S.FAILED) for i in ids], now())


def test_new_jobs_come_behind_their_users_jobs_ahead_and_waiting(engine: Engine) -> None:
    # Given a user with 3 running and 4 throttled jobs, and a user with none
    busy, fresh, site = a_user(), a_user(), a_site(engine)
    put(engine, busy, site, TO_RUNNING, [0] * 3)
    put(engine, busy, site, TO_THROTTLED, [0] * 4)
    # When each submits 6 jobs of priority 100
    specs = [JobSpec(command="true", id=f"j{n:02d}", priority=100) for n in range(12)]
    owners = {s.id: busy if n < 6 else fresh for n, s in enumerate(specs)}
    with transaction(engine) as conn:
        found = new_priorities(conn, specs, owners, step=5)
    # Then the busy user's lose (3 + 4 + n) // 5, the other's n // 5
    assert [found[f"j{n:02d}"] for n in range(6)] == [99, 99, 99, 98, 98, 98]
    assert [found[f"j{n:02d}"] for n in range(6, 12)] == [100] * 5 + [99]


def test_a_users_waiting_jobs_move_up_as_its_running_jobs_end(engine: Engine) -> None:
    # Given a user with 5 running jobs and 8 throttled ones, submitted at priority 10
    # except one at 50
    owner, site = a_user(), a_site(engine)
    running = put(engine, owner, site, TO_RUNNING, [0] * 5)
    waiting = put(engine, owner, site, TO_THROTTLED, [10] * 7 + [50])
    # When the priorities are computed again
    with transaction(engine) as conn:
        reprioritise(conn, owner, ahead=5, step=5)
    # Then each is base - (5 + n) // 5, the priority 50 job first
    assert priorities(engine, waiting) == [9, 9, 9, 9, 8, 8, 8, 49]
    # When all 5 running jobs end and the periodic pass runs
    finish(engine, running)
    UserPriorities(engine, Settings(user_priority_step=5)).check()
    # Then the waiting jobs moved up: base - n // 5
    assert priorities(engine, waiting) == [10, 10, 10, 10, 9, 9, 9, 50]


def test_the_pass_leaves_priorities_as_submitted_when_the_step_is_zero(engine: Engine) -> None:
    owner, site = a_user(), a_site(engine)
    put(engine, owner, site, TO_RUNNING, [0] * 10)
    waiting = put(engine, owner, site, TO_THROTTLED, [7] * 3)
    UserPriorities(engine, Settings(user_priority_step=0)).check()
    assert priorities(engine, waiting) == [7, 7, 7]


def test_a_user_at_its_cap_at_a_site_leaves_room_to_another_user(engine: Engine) -> None:
    # Given a site where user A has 2 running jobs and 5 throttled jobs of high priority,
    # and user B 3 throttled jobs of low priority
    a, b, site = a_user(), a_user(), a_site(engine)
    put(engine, a, site, TO_RUNNING, [0] * 2)
    a_waiting = put(engine, a, site, TO_THROTTLED, [100] * 5)
    b_waiting = put(engine, b, site, TO_THROTTLED, [0] * 3)
    # When throttled jobs are released with room for 20, each user capped at 3 at a site
    limits = Limits(users=Caps(max_running_per_site=3), priority_step=0)
    with transaction(engine) as conn:
        release(conn, now(), limits, {site})
        stmt = select(jobs.c.id, jobs.c.state).where(jobs.c.site == site)
        states = {r.id: r.state for r in conn.execute(stmt)}
    # Then A gets one more job activated, up to its cap, and B all of its own
    assert [states[i] for i in a_waiting].count("activated") == 1
    assert [states[i] for i in b_waiting] == ["activated"] * 3


def test_a_user_at_its_total_cap_stays_throttled_with_the_rule_named(engine: Engine) -> None:
    # Given user A with 2 jobs running at one site and 2 throttled at another
    a, busy, quiet = a_user(), a_site(engine), a_site(engine)
    put(engine, a, busy, TO_RUNNING, [0] * 2)
    held = put(engine, a, quiet, TO_THROTTLED, [0] * 2)
    # When they are released with a cap of 2 activated or running jobs per user
    with transaction(engine) as conn:
        assert release(conn, now(), Limits(users=Caps(max_running=2)), {quiet}) == 0
    # Then they wait; activation says why
    with transaction(engine) as conn:
        rows = conn.execute(select(jobs).where(jobs.c.id.in_(held))).mappings().all()
        go, wait = split(conn, rows, Limits(users=Caps(max_running=2)))
    assert go == []
    assert set(wait.values()) == {
        f"user {a} at its cap: 2 job(s) activated or running, user_max_running 2"
    }


def test_a_submission_beyond_the_users_cap_of_queued_jobs_is_refused(engine: Engine) -> None:
    # Given a user with 3 throttled jobs and a cap of 5 queued jobs
    owner, site = a_user(), a_site(engine)
    put(engine, owner, site, TO_THROTTLED, [0] * 3)
    with transaction(engine) as conn:
        cap = QueuedCap(conn, Caps(max_queued=5))
        # When it submits 2 jobs, then 1 more, Then the first 2 pass and the third is refused
        assert cap.refusal(owner, 2) is None
        why = cap.refusal(owner, 1)
        assert why == (
            f"user {owner} has 5 queued job(s), user_max_queued 5: 1 more refused "
            "(submit again as earlier jobs start)"
        )
        # And another user is not held back by it
        assert cap.refusal(a_user(), 5) is None
        assert user_use(conn, [owner])[owner].queued == 3


def test_brokerage_leaves_out_a_site_where_the_user_has_its_cap_of_queued_jobs(
    engine: Engine,
) -> None:
    # Given a user with 2 throttled jobs at site a, a cap of 2 queued jobs per site,
    # and another site b
    owner, a, b = a_user(), a_site(engine), a_site(engine)
    put(engine, owner, a, TO_THROTTLED, [0] * 2)
    caps = Caps(max_queued_per_site=2)
    free = JobSpec(command="true", id="free", sites=[a, b])
    pinned = JobSpec(command="true", id="pinned", site=a)
    others = JobSpec(command="true", id="others", site=a)
    owners = {"free": owner, "pinned": owner, "others": a_user()}
    with transaction(engine) as conn:
        # When jobs of the user that may go to either, or only to a, are brokered
        placed, unplaced = Brokerage(conn, 10.0, caps=caps).place([free, pinned, others], 1, owners)
    # Then the first goes to b, saying why not a; the one pinned to a is not placed,
    # naming the rule; another user's job goes to a
    where = {p.spec.id: p for p in placed}
    why_not_a = f"user {owner} has 2 queued job(s) here, user_max_queued_per_site 2"
    assert where["free"].site == b
    assert where["free"].record is not None
    assert where["free"].record["skipped"] == {a: why_not_a}
    assert where["others"].site == a
    (refused,) = unplaced
    assert refused.spec.id == "pinned" and why_not_a in str(refused.failure())


def test_a_users_own_caps_replace_everyones(engine: Engine) -> None:
    # Given everyone capped at 1 running job and user A at 3 (user_caps), each with 1
    # running job and 3 throttled at a site
    a, b, site = a_user(), a_user(), a_site(engine)
    settings = Settings(user_max_running=1, user_caps=f"{a}:max_running=3")
    for user in (a, b):
        put(engine, user, site, TO_RUNNING, [0])
        put(engine, user, site, TO_THROTTLED, [0] * 3)
    # When throttled jobs are released
    with transaction(engine) as conn:
        release(conn, now(), Limits.of(settings), {site})
        stmt = select(jobs.c.owner, jobs.c.state).where(jobs.c.site == site)
        states = [(r.owner, r.state) for r in conn.execute(stmt)]
    # Then A got 2 more activated, up to its own cap, and B none
    assert states.count((a, "activated")) == 2
    assert states.count((b, "activated")) == 0
    # And a refusal names the user's own rule (its 3 queued: 2 activated, 1 throttled)
    with transaction(engine) as conn:
        caps = Caps.of(Settings(user_max_queued=100, user_caps=f"{a}:max_queued=1"))
        assert QueuedCap(conn, caps).refusal(a) == (
            f"user {a} has 3 queued job(s), user_caps {a}:max_queued=1: 1 more refused "
            "(submit again as earlier jobs start)"
        )


def test_user_caps_that_do_not_parse_are_refused_naming_the_item() -> None:
    with pytest.raises(ConfigError, match=r"user_caps: expected USER:CAP=N .* got 'alice=5'"):
        Settings.load(environ={}, user_caps="alice=5")
    with pytest.raises(ConfigError, match=r"got 'user\.a:max_jobs=5'"):
        Settings.load(environ={}, user_caps="user.a:max_running=1,user.a:max_jobs=5")
    overrides = Settings(user_caps="user.a:max_running=1, user.a:max_queued=9").user_cap_overrides()
    assert overrides == {"user.a": {"max_running": 1, "max_queued": 9}}
