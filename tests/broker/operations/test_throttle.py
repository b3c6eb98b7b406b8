"""Throttling: the cap, shares between activities, priority within one; idle re-brokerage."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, update

from broker.error_codes import TaskBufferError
from broker.operations.throttle import Limits, SiteUse, fair_order
from broker.protocol import JobSpec
from broker.service.rebrokerage import Rebrokerage
from broker.settings import Settings
from broker.states import JobState
from broker.store.clock import now
from broker.store.engine import transaction
from broker.store.jobs import get_job
from broker.store.schema import jobs
from broker.store.sites import add_site
from tests.broker.service.jobs import jobs_in, row


def job(n: int, activity: str, priority: int = 0) -> Any:
    """A stand-in for a job row: the columns ordering reads."""
    return {"id": f"{activity}-{n:02d}", "activity": activity, "priority": priority}


def test_the_cap_is_twenty_or_twice_the_running_jobs() -> None:
    limits = Limits()
    assert [limits.cap(r) for r in (0, 10, 11, 50)] == [20, 20, 22, 100]


def test_shares_decide_between_activities_and_priority_within_one() -> None:
    # Given 10 production and 10 analysis jobs waiting, with shares 80:20
    rows = [job(n, "production", priority=n) for n in range(10)]
    rows += [job(n, "analysis", priority=100) for n in range(10)]
    # When they are ordered for activation at an empty site
    order = fair_order(rows, SiteUse(), Limits(shares={"production": 80, "analysis": 20}))
    # Then of the first 10, 8 are production, highest priority first, and 2 analysis
    first = order[:10]
    assert sum(r["activity"] == "analysis" for r in first) == 2
    production = [r["priority"] for r in first if r["activity"] == "production"]
    assert production == [9, 8, 7, 6, 5, 4, 3, 2]


def test_activated_jobs_at_a_site_no_pilot_visits_are_re_brokered(engine: Engine) -> None:
    # Given a job activated long ago at a site no pilot has claimed from, and another site
    t = now()
    (stuck,) = jobs_in(engine, JobState.ACTIVATED, at=t - timedelta(hours=2))
    with transaction(engine) as conn:
        add_site(conn, "OTHER_SITE")
        spec = JobSpec(command="true", id=stuck, sites=["TEST_SITE", "OTHER_SITE"])
        conn.execute(update(jobs).where(jobs.c.id == stuck).values(spec=dataclasses.asdict(spec)))
    # When re-brokerage looks, an hour of idleness allowed
    Rebrokerage(engine, Settings(rebrokerage_idle_s=3600)).check(at=t)
    # Then its attempt is closed as reassigned and the next one is at the other site
    job = row(engine, stuck)
    assert (job["attempt"], job["site"], job["state"]) == (2, "OTHER_SITE", "activated")
    with transaction(engine) as conn:
        first = get_job(conn, stuck)["attempts"][0]
    assert (first["state"], first["error_code"]) == ("closed", TaskBufferError.REASSIGNED)
    assert "no pilot took work at site TEST_SITE" in first["diagnostic"]
