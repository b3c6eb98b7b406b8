"""New jobs: placed, and written once in the state they reach, with every move in their history."""

from __future__ import annotations

import uuid

from sqlalchemy import Connection, Engine, select, text

from broker import topology
from broker.error_codes import BrokerageError, DDMError
from broker.operations.brokerage import Brokerage
from broker.operations.intake import store_jobs
from broker.operations.throttle import Limits
from broker.protocol import JobDispatch, JobSpec, decode_body
from broker.store.clock import now
from broker.store.datasets import FileRecord, register
from broker.store.engine import transaction
from broker.store.jobs import states_of
from broker.store.schema import job_attempts, job_files, job_transitions, jobs, outbox
from broker.store.sites import add_site


def history(conn: Connection, job_id: str) -> list[tuple[str | None, str]]:
    stmt = (
        select(job_transitions.c.from_state, job_transitions.c.to_state)
        .where(job_transitions.c.job_id == job_id)
        .order_by(job_transitions.c.id)
    )
    return [(r.from_state, r.to_state) for r in conn.execute(stmt)]


def rows_updated(conn: Connection, table: str) -> int:
    """Row versions this PostgreSQL transaction has updated in ``table`` so far."""
    stmt = text("SELECT n_tup_upd FROM pg_stat_xact_user_tables WHERE relname = :t")
    return int(conn.execute(stmt, {"t": table}).scalar_one())


def test_new_jobs_are_written_once_in_the_state_they_reach(engine: Engine) -> None:
    # Given site A, whose queue takes 2 activated jobs, and site B holding the one
    # registered input file
    tag = uuid.uuid4().hex[:8]
    a, b = f"A_{tag}", f"B_{tag}"
    here = FileRecord("test", f"here.{tag}", str(uuid.uuid4()), 1, "00000001")
    t = now()
    with transaction(engine) as conn:
        add_site(conn, a)
        add_site(conn, b)
        register(conn, f"in.{tag}", [(here, "/se/here")], b, t)

    def spec(n: str, sites: list[str], inputs: tuple[str, ...] = ()) -> JobSpec:
        return JobSpec(command="true", id=f"{n}-{tag}", sites=sites, input_files=list(inputs))

    specs = [
        *(spec(f"plain{n}", [a]) for n in range(3)),
        spec("at-site", [b], (here.did,)),
        spec("elsewhere", [a], (here.did,)),
        spec("unknown", [b], (f"test:missing.{tag}",)),
        spec("nowhere", [f"NOWHERE_{tag}"]),
    ]
    # When they are stored in one transaction
    with transaction(engine) as conn:
        placed, unplaced = store_jobs(
            conn, Brokerage(conn, 1.0), specs, {}, t, Limits(min_activated=2)
        )
        updated = rows_updated(conn, "jobs") if conn.dialect.name == "postgresql" else 0
    # Then each is in the state its moves reach, and its history has every move
    assert (len(placed), len(unplaced)) == (6, 1)
    with transaction(engine) as conn:
        ids = [s.id for s in specs]
        states = states_of(conn, ids)
        stmt = select(job_attempts.c.job_id, job_attempts.c.state)
        attempts = {i: st for i, st in conn.execute(stmt.where(job_attempts.c.job_id.in_(ids)))}
        lives = {s.id.removesuffix(f"-{tag}"): history(conn, s.id) for s in specs}
        failed = {
            r.id: (r.error_family, r.error_code, r.site)
            for r in conn.execute(select(jobs).where(jobs.c.id.in_(ids), jobs.c.state == "failed"))
        }
        dispatches = select(outbox.c.body).where(outbox.c.exchange == topology.JOBS_EXCHANGE)
        bodies = [r.body for r in conn.execute(dispatches) if tag in r.body]
        dispatched = [decode_body(JobDispatch, body) for body in bodies]
        linked = {
            r.job_id for r in conn.execute(select(job_files).where(job_files.c.job_id.in_(ids)))
        }
    assert attempts == states
    assert sorted(states.values()) == sorted(
        ["activated", "activated", "throttled", "activated", "assigned", "failed", "failed"]
    )
    start = [(None, "defined"), ("defined", "assigned")]
    assert sorted(lives[f"plain{n}"][2] for n in range(3)) == [
        ("assigned", "activated"),
        ("assigned", "activated"),
        ("assigned", "throttled"),
    ]
    assert all(lives[f"plain{n}"][:2] == start for n in range(3))
    assert lives["at-site"] == [*start, ("assigned", "activated")]
    assert lives["elsewhere"] == start
    assert lives["unknown"] == [*start, ("assigned", "failed")]
    assert lives["nowhere"] == [(None, "defined"), ("defined", "failed")]
    assert failed == {
        f"unknown-{tag}": ("ddm", int(DDMError.UNKNOWN_INPUT), b),
        f"nowhere-{tag}": ("brokerage", int(BrokerageError.NO_SITE), None),
    }
    # And only the activated ones are dispatched; the jobs naming the registered file link it
    activated = {i for i, state in states.items() if state == "activated"}
    assert sorted(d.job_id for d in dispatched) == sorted(activated)
    assert linked == {f"at-site-{tag}", f"elsewhere-{tag}"}
    # And on PostgreSQL no job row was written twice
    assert updated == 0
