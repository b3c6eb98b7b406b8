"""How many pilots the factory submits: Harvester's rule within the limits."""

from __future__ import annotations

from broker.factory.plan import Limits, plan

LIMITS = Limits(max_queued=10, max_running=100, max_submit=20)


def test_no_work_means_no_pilots() -> None:
    assert plan({}, {}, {"SCORE": 3}, LIMITS) == {}


def test_queued_pilots_follow_the_activated_jobs() -> None:
    # Given 4 activated jobs and 1 pilot queued for them, then 4 queued already
    assert plan({"SCORE": 4}, {"SCORE": 1}, {}, LIMITS) == {"SCORE": 3}
    assert plan({"SCORE": 4}, {"SCORE": 4}, {}, LIMITS) == {}


def test_each_limit_holds() -> None:
    many = {"SCORE": 500}
    assert plan(many, {"SCORE": 8}, {}, LIMITS) == {"SCORE": 2}
    assert plan(many, {}, {"SCORE": 95}, LIMITS) == {"SCORE": 5}
    assert plan(many, {}, {}, LIMITS) == {"SCORE": 10}
    assert plan(many, {}, {}, Limits(50, 100, 20)) == {"SCORE": 20}


def test_the_room_goes_to_the_largest_resource_types_first() -> None:
    work = {"SCORE": 6, "MCORE": 6}
    assert plan(work, {}, {}, LIMITS) == {"MCORE": 6, "SCORE": 4}
