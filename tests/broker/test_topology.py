"""Topology: names and resource types."""

from __future__ import annotations

import pytest

from broker import topology


@pytest.mark.parametrize(
    ("cores", "memory_mb", "expected"),
    [(1, 2000, "SCORE"), (1, 4000, "SCORE_HIMEM"), (8, 16000, "MCORE"), (8, 32000, "MCORE_HIMEM")],
)
def test_resource_type_of_a_job(cores: int, memory_mb: int, expected: str) -> None:
    assert topology.resource_type(cores, memory_mb) == expected


def test_a_slot_serves_its_own_class_and_smaller_ones_largest_first() -> None:
    assert topology.resource_types_served(1, 2000) == ["SCORE"]
    assert topology.resource_types_served(8, 32000) == [
        "MCORE_HIMEM",
        "MCORE",
        "SCORE_HIMEM",
        "SCORE",
    ]
    assert topology.resource_types_served(8, 8000) == ["MCORE", "SCORE_HIMEM", "SCORE"]


def test_job_queue_names_follow_the_contract() -> None:
    assert topology.job_queue_name("SITE_A", "SCORE") == "pandamq.jobs.SITE_A.SCORE"
    queue = topology.Topology("quorum").job_queue("SITE_A", "MCORE")
    assert queue.routing_key == "SITE_A.MCORE"
    assert queue.queue_arguments["x-queue-type"] == "quorum"
