"""Tables, defined once; migrations and docs follow this module."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
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
#: A job row that is not final (the literal list keeps partial indexes usable by any plan).
LIVE = text("state NOT IN ('cancelled', 'closed', 'failed', 'finished')")
Time = DateTime(timezone=True)
BigId = BigInteger().with_variant(Integer, "sqlite")

sites = Table(
    "sites",
    metadata,
    Column("name", ID, primary_key=True),
    Column("status", String(16), nullable=False, default="online"),
    Column("created_at", Time, nullable=False),
    Column("se", String(64)),
    Column("slots", JSON),
    Column("max_walltime_s", Integer),
    Column("releases", JSON),
    Column("max_queued", Integer),
    Column("modified_at", Time),
    #: Who set the status: an operator's identity, or ``automatic`` (docs/brokerage.md).
    Column("status_by", String(256)),
    Column("status_reason", Text),
    Column("status_at", Time),
    #: A site the automatic rule put in ``test``: its probe jobs count from this time.
    Column("probe_at", Time),
)

#: Every change of a site's status, by whom and why.
site_status_changes = Table(
    "site_status_changes",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("site", ID, ForeignKey("sites.name"), nullable=False),
    Column("from_status", String(16)),
    Column("to_status", String(16), nullable=False),
    Column("at", Time, nullable=False),
    Column("status_by", String(256)),
    Column("reason", Text),
    Index(None, "site", "at"),
)

tasks = Table(
    "tasks",
    metadata,
    Column("id", ID, primary_key=True),
    Column("name", String(256)),
    Column("status", String(16), nullable=False),
    Column("created_at", Time, nullable=False),
    Column("spec", JSON),
    #: The user that submitted the task (its message's validated ``user_id``).
    Column("owner", String(256)),
    Column("ended_at", Time),
    #: How many of its first jobs are scouts (0: none); docs/reliability.md.
    Column("scouts", Integer, nullable=False, server_default=text("0")),
    #: The memory and walltime its jobs were tuned to, and from what (broker/operations/tuning.py).
    Column("tuning", JSON),
    #: Why it is in its status (``exhausted``), or runs as it does (too small to scout).
    Column("reason", Text),
    Index(None, "owner", "created_at"),
    Index(None, "status"),
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
    Column("activity", String(32)),
    Column("brokerage", JSON),
    #: The user that submitted the job (its messages' validated ``user_id``).
    Column("owner", String(256)),
    #: The priority it was submitted with; ``priority`` is that less what its user's
    #: fair share takes (``broker.operations.fairshare``). Empty on rows written before.
    Column("base_priority", Integer),
    #: A retried attempt waits in ``defined`` until then (its backoff), set up after.
    Column("retry_at", Time),
    Index(None, "state", "priority"),
    Index(None, "task_id"),
    # The monitor's: sites x states and recent final jobs; a task's progress.
    Index(None, "state", "modified_at", "site"),
    Index(None, "task_id", "state", "modified_at"),
    # The submitter's API: a user's jobs (or everyone's), newest first, page by page.
    Index(None, "owner", "created_at", "id"),
    Index(None, "created_at", "id"),
    # Fair share and users' caps: a user's jobs in each live state counted, and every
    # user's with their highest priority (the monitor), from the index alone and one
    # range per live state, however many finished jobs there are.
    Index(None, "state", "owner", "priority"),
)
#: The live jobs of a task, so that "has this task ended?" reads no finished job.
Index(
    "ix_jobs_task_id_live",
    jobs.c.task_id,
    postgresql_where=LIVE,
    sqlite_where=LIVE,
)
#: A site's jobs in a state, counted; and its throttled jobs of an activity in the
#: order they are released (priority, then id), read to the first n without going
#: through the whole backlog (83 ms with 100,000 throttled jobs, 0.2 ms with it).
Index(
    "ix_jobs_site_state_activity_priority_id",
    jobs.c.site,
    jobs.c.state,
    jobs.c.activity,
    jobs.c.priority.desc(),
    jobs.c.id,
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
    #: Whether the attempt was retried after it ended, and why (the rule that decided).
    Column("retry_decision", Text),
    # What the attempt asked for and what its payload used, from the pilot's last event.
    Column("memory_mb", Integer),
    Column("peak_rss_mb", Integer),
    Column("cpu_time_s", Float),
    Column("wall_time_s", Float),
    Column("output_bytes", BigInteger),
    # The error list: failed attempts of the last hours.
    Index(None, "state", "ended_at"),
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
    Index(None, "last_seen"),
)

#: Operators' retry rules (``pandamq retry-rules apply``); the defaults are in
#: ``broker.retry_rules.defaults``. ``position`` is the rule's place in its file.
retry_rules = Table(
    "retry_rules",
    metadata,
    Column("name", ID, primary_key=True),
    Column("position", Integer, nullable=False),
    Column("error_family", String(16)),
    Column("error_code", Integer),
    Column("exit_code", Integer),
    Column("diagnostic", Text),
    Column("site", ID),
    Column("task_id", ID),
    Column("action", String(32), nullable=False),
    Column("max_attempts", Integer),
    Column("passive", Boolean, nullable=False, server_default=false()),
    Column("created_at", Time, nullable=False),
    Column("modified_at", Time, nullable=False),
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

# Data management (ddm_bridge): files, datasets, replicas, subscriptions.

files = Table(
    "files",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("scope", ID, nullable=False),
    Column("name", String(256), nullable=False),
    Column("guid", String(36), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("adler32", String(8), nullable=False),
    Column("created_at", Time, nullable=False),
    UniqueConstraint("scope", "name"),
)

datasets = Table(
    "datasets",
    metadata,
    Column("name", String(256), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("task_id", ID, ForeignKey("tasks.id")),
    Column("site", ID, ForeignKey("sites.name")),
    Column("created_at", Time, nullable=False),
    Column("modified_at", Time, nullable=False),
    Column("closed_at", Time),
    Index(None, "task_id"),
    Index(None, "kind", "site", "state"),
    # The monitor's dataset list: the datasets changed last.
    Index(None, "modified_at"),
)

dataset_contents = Table(
    "dataset_contents",
    metadata,
    Column("dataset", String(256), ForeignKey("datasets.name"), primary_key=True),
    Column("file_id", BigId, ForeignKey("files.id"), primary_key=True),
    Column("position", Integer, nullable=False),
    Column("added_at", Time, nullable=False),
    Index(None, "file_id"),
)

replicas = Table(
    "replicas",
    metadata,
    Column("file_id", BigId, ForeignKey("files.id"), primary_key=True),
    Column("site", ID, ForeignKey("sites.name"), primary_key=True),
    Column("path", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("created_at", Time, nullable=False),
    Column("modified_at", Time, nullable=False),
    Index(None, "site", "state"),
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("dataset", String(256), ForeignKey("datasets.name"), nullable=False),
    Column("site", ID, ForeignKey("sites.name"), nullable=False),
    Column("state", String(16), nullable=False),
    Column("files_total", Integer, nullable=False, default=0),
    Column("files_done", Integer, nullable=False, default=0),
    Column("attempts", Integer, nullable=False, default=0),
    Column("error", Text),
    Column("created_at", Time, nullable=False),
    Column("modified_at", Time, nullable=False),
    Column("started_at", Time),
    Column("ended_at", Time),
    # The DDM bridge serving the subscription, and until when (``ddm_bridge.holding``).
    Column("bridge", String(128)),
    Column("bridge_until", Time),
    UniqueConstraint("dataset", "site"),
    Index(None, "state"),
)

job_files = Table(
    "job_files",
    metadata,
    Column("job_id", ID, ForeignKey("jobs.id"), primary_key=True),
    Column("file_id", BigId, ForeignKey("files.id"), primary_key=True),
    Column("role", String(8), nullable=False),
    Column("attempt", Integer),
    Column("dispatch_dataset", String(256), ForeignKey("datasets.name")),
    Index(None, "file_id"),
    Index(None, "dispatch_dataset"),
)

# Periodic work shared by the services (broker.store.leases): who holds each duty, and
# until when.

leases = Table(
    "leases",
    metadata,
    Column("name", String(256), primary_key=True),
    Column("holder", String(128), nullable=False),
    Column("until", Time, nullable=False),
    Column("runs", BigInteger, nullable=False, server_default=text("0")),
    Column("taken_at", Time, nullable=False),
    # When its holder last gave it back (a turn of periodic work that ended).
    Column("given_at", Time),
)

# What a pilot reported of an attempt that ended with files (broker.store.reports):
# the job waits in ``holding`` until the DDM bridge has registered them and moved it
# on (PanDA's Adder), or the bridge removes what was staged (the attempt is over).

reported_outputs = Table(
    "reported_outputs",
    metadata,
    Column("job_id", ID, ForeignKey("jobs.id"), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    #: The pilot's final event, as the wire protocol encodes it.
    Column("event", Text, nullable=False),
    Column("reported_at", Time, nullable=False),
    # The DDM bridge registering it, and until when (``ddm_bridge.holding``).
    Column("bridge", String(128)),
    Column("bridge_until", Time),
)
