"""The automatic rule on site statuses and the task exclusions, read from SQL (SQLite and
PostgreSQL): stuck and idle sites go to test, an operator's status stays, a task's
failures at a site leave it out for the task's next jobs."""

from __future__ import annotations

import itertools
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert, update

from broker.brokerage.catalogue import SiteConfig
from broker.operations.brokerage import Brokerage
from broker.protocol import JobSpec
from broker.service.site_health import SiteHealthCheck
from broker.settings import Settings
from broker.states import JobState
from broker.store import transitions
from broker.store.clock import now
from broker.store.engine import transaction
from broker.store.jobs import insert_defined
from broker.store.schema import jobs, sites, tasks
from broker.store.site_status import status_history, statuses
from broker.store.sites import apply_catalogue, set_status
from broker.store.transitions import Change

S = JobState
LIFE = [S.DEFINED, S.ASSIGNED, S.ACTIVATED, S.SENT, S.STARTING, S.RUNNING]
SETTINGS = Settings(site_start_timeout_s=900, rebrokerage_idle_s=3600)


def new_site(engine: Engine, status: str = "online", by: str | None = None) -> str:
    name = f"SITE_{uuid.uuid4().hex[:8].upper()}"
    with transaction(engine) as conn:
        apply_catalogue(conn, [SiteConfig(name)])
        if status != "online":
            set_status(conn, name, status, by=by)
    # Its status has been as it is for long enough to judge idle and stuck jobs.
    _age_status(engine, name, timedelta(hours=2))
    return name


def _age_status(engine: Engine, name: str, age: timedelta) -> None:
    with transaction(engine) as conn:
        conn.execute(update(sites).where(sites.c.name == name).values(status_at=now() - age))


def jobs_at(
    engine: Engine, site: str, state: JobState, count: int, at: datetime, **spec: Any
) -> list[str]:
    """New jobs at ``site`` moved along their life up to ``state``, last changed at ``at``."""
    ids = [uuid.uuid4().hex for _ in range(count)]
    path = LIFE[: LIFE.index(state) + 1] if state in LIFE else [*LIFE, state]
    with transaction(engine) as conn:
        insert_defined(conn, [JobSpec(command="true", id=i, **spec) for i in ids], at, {})
        changes = [
            Change(i, 1, a, b, values={"site": site, "pilot_id": "p"})
            for i in ids
            for a, b in itertools.pairwise(path)
        ]
        transitions.apply(conn, changes, at)
        conn.execute(update(jobs).where(jobs.c.id.in_(ids)).values(modified_at=at))
    return ids


def status_of(engine: Engine, site: str) -> dict[str, Any]:
    with transaction(engine) as conn:
        return next(r for r in statuses(conn) if r["name"] == site)


def test_a_site_whose_jobs_stopped_starting_goes_to_test(engine: Engine) -> None:
    # Given a site with jobs sent to pilots 1000 s ago that never started
    site = new_site(engine)
    jobs_at(engine, site, S.SENT, 2, now() - timedelta(seconds=1000))
    # When the rule judges it (start timeout 900 s)
    assert SiteHealthCheck(engine, SETTINGS).check() >= 1
    # Then it is in test, set by the rule, saying why
    row = status_of(engine, site)
    assert (row["status"], row["status_by"]) == ("test", "automatic")
    assert row["status_reason"] == "2 job(s) sent to pilots more than 900 s ago never started"


def test_a_site_where_jobs_start_is_left_online(engine: Engine) -> None:
    site = new_site(engine)
    jobs_at(engine, site, S.SENT, 2, now() - timedelta(seconds=1000))
    jobs_at(engine, site, S.RUNNING, 1, now() - timedelta(seconds=10))
    SiteHealthCheck(engine, SETTINGS).check()
    assert status_of(engine, site)["status"] == "online"


def test_a_site_whose_pilots_stopped_claiming_goes_to_test(engine: Engine) -> None:
    site = new_site(engine)
    jobs_at(engine, site, S.ACTIVATED, 3, now() - timedelta(seconds=4000))
    SiteHealthCheck(engine, SETTINGS).check()
    row = status_of(engine, site)
    assert row["status"] == "test"
    assert row["status_reason"] == "no pilot claimed a job for 3600 s while 3 were activated"


def test_an_operators_status_is_left_alone_and_says_who_set_it(engine: Engine) -> None:
    site = new_site(engine, "brokeroff", by="user.ops")
    jobs_at(engine, site, S.SENT, 2, now() - timedelta(seconds=1000))
    SiteHealthCheck(engine, SETTINGS).check()
    row = status_of(engine, site)
    assert (row["status"], row["status_by"]) == ("brokeroff", "user.ops")
    with transaction(engine) as conn:
        (change,) = status_history(conn, site)
    assert (change["from_status"], change["to_status"], change["status_by"]) == (
        "online",
        "brokeroff",
        "user.ops",
    )


def test_applying_the_catalogue_keeps_a_site_the_rule_put_in_test(engine: Engine) -> None:
    site = new_site(engine)
    jobs_at(engine, site, S.SENT, 1, now() - timedelta(seconds=1000))
    SiteHealthCheck(engine, SETTINGS).check()
    with transaction(engine) as conn:
        # The file still says online: the operator did not change their mind
        assert apply_catalogue(conn, [SiteConfig(site)], by="user.ops") == {site: "unchanged"}
        assert apply_catalogue(conn, [SiteConfig(site, status="offline")], by="user.ops") == {
            site: "changed"
        }
    row = status_of(engine, site)
    assert (row["status"], row["status_by"], row["status_reason"]) == (
        "offline",
        "user.ops",
        "sites apply",
    )


def test_a_tasks_failures_at_a_site_leave_it_out_for_the_tasks_next_jobs(engine: Engine) -> None:
    # Given a task whose 3 jobs failed at site A in the last minutes
    a, b = new_site(engine), new_site(engine)
    task = uuid.uuid4().hex[:16]
    with transaction(engine) as conn:
        conn.execute(insert(tasks).values(id=task, status="running", created_at=now()))
    jobs_at(engine, a, S.FAILED, 3, now() - timedelta(seconds=60), task_id=task)
    # When its next job is brokered, and a job of another task
    with transaction(engine) as conn:
        brokerage = Brokerage.of(conn, Settings())
        mine = brokerage.decide(JobSpec(command="x", task_id=task, sites=[a, b]))
        other = brokerage.decide(JobSpec(command="x", sites=[a, b]))
    # Then A is left out for the task only, saying why and until when
    assert mine.site == b
    assert mine.skipped[a].startswith(
        f"task {task}: 3 failed and 0 finished here in the last 3600 s"
    )
    assert " until " in mine.skipped[a]
    assert a not in other.skipped
