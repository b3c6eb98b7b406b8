"""Many rows in one statement: ``insert_each`` (COPY on PostgreSQL) and ``update_each``."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from broker.store.bulk import insert_each, update_each
from broker.store.clock import as_utc, now
from broker.store.engine import transaction
from broker.store.schema import jobs


def job_rows(n: int, tag: str) -> list[dict[str, object]]:
    t = now()
    return [
        {
            "id": f"bulk-{tag}-{i}",
            "resource_type": "SCORE",
            "state": "defined",
            "attempt": 1,
            "priority": i,
            "max_attempts": 3,
            "spec": {"command": "echo 'a\tb'\n", "input_files": [f"s:f{i}"], "n": None},
            "brokerage": None if i % 2 else {"why": "weight 0.5", "weights": {"A": 0.5}},
            "diagnostic": None if i % 3 else "line one\nline two \\ end",
            "created_at": t,
            "modified_at": t,
        }
        for i in range(n)
    ]


def test_rows_are_inserted_and_updated_as_given(engine: Engine) -> None:
    # Given rows with JSON, SQL NULLs, tabs, newlines and backslashes
    tag = uuid.uuid4().hex[:8]
    rows = job_rows(5, tag)
    # When they are inserted, and two of them updated
    with transaction(engine) as conn:
        insert_each(conn, jobs, rows)
        update_each(conn, jobs, ["id"], [{"id": rows[1]["id"], "state": "assigned"}])
    # Then every value reads back as it was given (a JSON None is SQL NULL)
    with transaction(engine) as conn:
        stmt = select(jobs).where(jobs.c.id.like(f"bulk-{tag}-%")).order_by(jobs.c.priority)
        found = list(conn.execute(stmt).mappings())
    assert [r["state"] for r in found] == ["defined", "assigned", "defined", "defined", "defined"]
    for given, read in zip(rows, found, strict=True):
        for column in ("spec", "brokerage", "diagnostic"):
            assert read[column] == given[column], column
        assert as_utc(read["created_at"]) == given["created_at"]


def test_a_duplicate_row_fails_the_statement_and_writes_nothing(engine: Engine) -> None:
    # Given a job row that is there already
    tag = uuid.uuid4().hex[:8]
    first, second = job_rows(2, tag)
    with transaction(engine) as conn:
        insert_each(conn, jobs, [first])
    # When a batch holding a new row and that one again is inserted
    # Then the database's refusal comes up as SQLAlchemy reports any statement's
    with pytest.raises(IntegrityError), transaction(engine) as conn:
        insert_each(conn, jobs, [second, first])
    # And nothing of the batch was written
    with transaction(engine) as conn:
        ids = set(conn.execute(select(jobs.c.id).where(jobs.c.id.like(f"bulk-{tag}-%"))).scalars())
    assert ids == {first["id"]}
