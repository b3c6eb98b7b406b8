"""Tables, defined once; migrations and docs follow this module."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    true,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ID = String(64)
Time = DateTime(timezone=True)
BigId = BigInteger().with_variant(Integer, "sqlite")

sites = Table(
    "sites",
    metadata,
    Column("name", ID, primary_key=True),
    Column("status", String(16), nullable=False, default="online"),
    Column("created_at", Time, nullable=False),
)

tasks = Table(
    "tasks",
    metadata,
    Column("id", ID, primary_key=True),
    Column("name", String(256)),
    Column("status", String(16), nullable=False),
    Column("created_at", Time, nullable=False),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", ID, primary_key=True),
    Column("task_id", ID, ForeignKey("tasks.id")),
    Column("name", String(256)),
    Column("site", ID, ForeignKey("sites.name")),
    Column("resource_type", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("priority", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("spec", JSON, nullable=False),
    Column("pilot_id", ID),
    Column("exit_code", Integer),
    Column("error_family", String(16)),
    Column("error_code", Integer),
    Column("diagnostic", Text),
    Column("created_at", Time, nullable=False),
    Column("modified_at", Time, nullable=False),
    Column("heartbeat_at", Time),
    Column("kill_requested_at", Time),
    Index(None, "site", "state"),
    Index(None, "state", "priority"),
    Index(None, "task_id"),
)

job_attempts = Table(
    "job_attempts",
    metadata,
    Column("job_id", ID, ForeignKey("jobs.id"), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("site", ID),
    Column("pilot_id", ID),
    Column("state", String(16), nullable=False),
    Column("created_at", Time, nullable=False),
    Column("started_at", Time),
    Column("ended_at", Time),
    Column("exit_code", Integer),
    Column("error_family", String(16)),
    Column("error_code", Integer),
    Column("diagnostic", Text),
)

job_transitions = Table(
    "job_transitions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("job_id", ID, ForeignKey("jobs.id"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("from_state", String(16)),
    Column("to_state", String(16), nullable=False),
    Column("at", Time, nullable=False),
    Column("event_id", ID, unique=True),
    Column("reason", Text),
    Index(None, "job_id", "attempt"),
)

pilots = Table(
    "pilots",
    metadata,
    Column("id", ID, primary_key=True),
    Column("site", ID, nullable=False),
    Column("node", String(256)),
    Column("cores", Integer),
    Column("memory_mb", Integer),
    # Empty until the pilot's first claim: a factory records its pilots at submission.
    Column("first_seen", Time),
    Column("last_seen", Time),
    Column("jobs_claimed", Integer, nullable=False, default=0),
    # Set by the pilot factory (broker/factory) for the pilots it submits.
    Column("batch_system", String(16)),
    Column("batch_id", String(128)),
    Column("resource_type", String(16)),
    Column("walltime_s", Integer),
    Column("state", String(16)),
    Column("submitted_at", Time),
    Column("started_at", Time),
    Column("ended_at", Time),
    Column("exit_code", Integer),
    Index(None, "site", "state"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("exchange", String(128), nullable=False),
    Column("routing_key", String(256), nullable=False),
    Column("body", Text, nullable=False),
    Column("mandatory", Boolean, nullable=False, server_default=true()),
    Column("created_at", Time, nullable=False),
)
