"""Prometheus metrics of the broker service, named once here."""

from __future__ import annotations

from prometheus_client import Counter

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
SUBSCRIPTIONS_ENDED = Counter(
    "pandamq_subscriptions_ended_total", "Dataset subscriptions ended, by how.", ["state"]
)
FILE_COPIES = Counter(
    "pandamq_file_copies_total", "Copies the local DDM made, verified or not.", ["result"]
)
REFUSED_SENDERS = Counter(
    "pandamq_refused_senders_total",
    "Messages refused because their sender (user_id) may not do what they ask.",
    ["kind"],
)
