"""Prometheus metrics of pandamq, named once here (docs/metrics.md lists each).

Counters and histograms move where the pipeline acts (broker/observability/
pipeline.py hangs them on job transitions); gauges of jobs, pilots and queue
depth are read from SQL when scraped (broker/observability/gauges.py).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

#: Buckets for waits from a second to a couple of days (dispatch, queue wait, payload).
DURATION_BUCKETS = (
    0.05,
    0.25,
    1.0,
    5.0,
    15.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    4 * 3600.0,
    12 * 3600.0,
    48 * 3600.0,
)

TRANSITIONS = Counter(
    "pandamq_job_transitions_total",
    "Job state transitions applied, by the job's site ('-' before brokerage).",
    ["site", "from_state", "to_state"],
)
ILLEGAL_TRANSITIONS = Counter(
    "pandamq_illegal_transitions_total",
    "Job state transitions refused by the state machine.",
    ["from_state", "to_state"],
)
DEAD_LETTERED = Counter(
    "pandamq_dead_lettered_total", "Messages sent to the dead-letter queue.", ["queue"]
)
FIELDS_TRIMMED = Counter(
    "pandamq_fields_trimmed_total",
    "Free texts of received messages (a payload's stderr tail) cut to their end.",
    ["queue", "field"],
)
CLAIMS = Counter("pandamq_claims_total", "Claim requests answered.", ["result"])
SUBSCRIPTIONS_ENDED = Counter(
    "pandamq_subscriptions_ended_total", "Dataset subscriptions ended, by how.", ["state"]
)
FILE_COPIES = Counter(
    "pandamq_file_copies_total", "Copies the local DDM made, verified or not.", ["result"]
)
FILE_COPY_DURATION = Histogram(
    "pandamq_file_copy_duration_seconds",
    "Time the local DDM took for one copy of a file between storage elements, verified or not.",
    ["result"],
    buckets=DURATION_BUCKETS,
)
REQUESTS = Counter(
    "pandamq_requests_total",
    "Submitters' requests answered, by queue and outcome (answered, bad_input, not_found, "
    "not_allowed).",
    ["queue", "outcome"],
)
REFUSED_SENDERS = Counter(
    "pandamq_refused_senders_total",
    "Messages refused because their sender (user_id) may not do what they ask.",
    ["kind"],
)
MESSAGES_MOVED = Counter(
    "pandamq_messages_moved_total",
    "Messages the broker service moved from a queue of an old name to its new one.",
    ["queue"],
)
REDISPATCHED = Counter(
    "pandamq_jobs_redispatched_total",
    "Activated jobs published again because their site's queue had lost their dispatch "
    "(a purge), by site.",
    ["site"],
)
JOB_ERRORS = Counter(
    "pandamq_job_errors_total",
    "Failed job attempts, by site, error family and error code.",
    ["site", "error_family", "error_code"],
)
RETRY_RULE_MATCHES = Counter(
    "pandamq_retry_rule_matches_total",
    "Failed job attempts a retry rule decided (passive=false), or would have decided had it "
    "been active (passive=true), by rule and action.",
    ["rule", "action", "passive"],
)
SITE_STATUS_CHANGES = Counter(
    "pandamq_site_status_changes_total",
    "Site statuses the automatic rule changed (online -> test, test -> online, test -> test"
    " when its probe jobs failed), by site.",
    ["site", "from_status", "to_status"],
)
HEARTBEATS = Counter("pandamq_heartbeats_total", "Job heartbeats recorded.", ["site"])
DISPATCH_LATENCY = Histogram(
    "pandamq_dispatch_latency_seconds",
    "Time from activated to claimed by a pilot (sent).",
    ["site"],
    buckets=DURATION_BUCKETS,
)
QUEUE_WAIT = Histogram(
    "pandamq_queue_wait_seconds",
    "Time from an attempt's creation (defined) to running.",
    ["site"],
    buckets=DURATION_BUCKETS,
)
PAYLOAD_DURATION = Histogram(
    "pandamq_payload_duration_seconds",
    "Time from starting to the pilot's final report (holding).",
    ["site"],
    buckets=DURATION_BUCKETS,
)

# the pilot factory (broker/factory)
PILOTS_SUBMITTED = Counter(
    "pandamq_factory_pilots_submitted_total",
    "Pilots the factory submitted to a batch system.",
    ["site", "resource_type"],
)
PILOTS_ENDED = Counter(
    "pandamq_factory_pilots_ended_total", "Pilots seen to end, by final state.", ["site", "state"]
)
PILOTS_DIED = Counter(
    "pandamq_factory_pilots_died_total",
    "Pilots that failed or went missing without running a job.",
    ["site"],
)
SITE_FAILING = Gauge(
    "pandamq_factory_site_failing",
    "1 while most of a site's recent pilots die without running a job, else 0.",
    ["site"],
)
TASK_SCOUTING = Counter(
    "pandamq_task_scouting_total",
    "Tasks' scouting and tuning, by outcome (docs/reliability.md, scouts).",
    ["outcome"],
)

DUTY_RUNS = Counter(
    "pandamq_duty_runs_total",
    "Turns of periodic work this process took and ran (broker.duties), by duty.",
    ["duty"],
)
