"""Prometheus metrics of the broker service, named once here."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

TRANSITIONS = Counter(
    "pandamq_job_transitions_total", "Job state transitions applied.", ["from_state", "to_state"]
)
ILLEGAL_TRANSITIONS = Counter(
    "pandamq_illegal_transitions_total",
    "Job state transitions refused by the state machine.",
    ["from_state", "to_state"],
)
DEAD_LETTERED = Counter(
    "pandamq_dead_lettered_total", "Messages sent to the dead-letter queue.", ["queue"]
)
CLAIMS = Counter("pandamq_claims_total", "Claim requests answered.", ["result"])

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
