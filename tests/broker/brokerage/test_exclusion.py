"""Sites left out for a while: a task's failures, the probe jobs of a site in test, and
the automatic rule on site statuses (pure functions)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from broker.brokerage.catalogue import SiteConfig
from broker.brokerage.exclusion import (
    ExclusionPolicy,
    Outcomes,
    Probation,
    exclusion_ends,
    task_exclusion,
)
from broker.brokerage.health import HealthPolicy, SiteHealth, Verdict, judge
from broker.brokerage.rules import LeftOut, Load, Needs, choose

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
POLICY = ExclusionPolicy(min_failures=3, ratio=2.0, window_s=3600)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_a_task_failing_at_a_site_leaves_it_out_with_until_when() -> None:
    outcomes = Outcomes(failed=(at(0), at(1), at(2)), finished=())
    reason = task_exclusion("t1", outcomes, POLICY)
    # Until the oldest failure leaves the window: then 2 failures are below the minimum
    assert reason == (
        "task t1: 3 failed and 0 finished here in the last 3600 s (left out from 3"
        " failures and more than 2 x finished), until 2026-12-03T13:00:00+00:00"
    )


def test_failures_must_outnumber_successes_beyond_the_ratio() -> None:
    five_to_two = Outcomes(failed=tuple(at(m) for m in range(5)), finished=(at(10), at(11)))
    four_to_two = Outcomes(failed=tuple(at(m) for m in range(4)), finished=(at(10), at(11)))
    assert task_exclusion("t", five_to_two, POLICY) is not None
    assert task_exclusion("t", four_to_two, POLICY) is None
    assert task_exclusion("t", Outcomes(failed=(at(0), at(1))), POLICY) is None


def test_the_exclusion_ends_when_enough_outcomes_left_the_window() -> None:
    # 5 failures and 2 successes: the exclusion holds while failures > 2 x successes
    outcomes = Outcomes(failed=tuple(at(m) for m in range(5)), finished=(at(10), at(11)))
    # After failure 0 left: 4 vs 2, no longer more than twice: ends then
    assert exclusion_ends(outcomes, POLICY) == at(60)


def test_a_site_on_probation_takes_its_probe_jobs_then_no_more() -> None:
    probation = Probation(2, T0, "all 10 jobs that ended here lately failed")
    assert probation.refusal(1) is None
    assert probation.refusal(2) == (
        "status test since 2026-12-03T12:00:00+00:00 (automatic: all 10 jobs that ended"
        " here lately failed): 2 probe job(s) there, at most 2 at once; until a probe job"
        " finishes"
    )
    paused = Probation(2, T0, "x", paused_until=at(10))
    assert paused.refusal(0) is not None
    assert "next probes from 2026-12-03T12:10:00+00:00" in (paused.refusal(0) or "")


def test_brokerage_sends_probe_jobs_to_a_site_in_test_and_the_rest_elsewhere() -> None:
    sites = [SiteConfig("A", status="test"), SiteConfig("B")]
    left = LeftOut(probation={"A": Probation(1, T0, "why")})
    first = choose(Needs(), sites, {}, {}, 10.0, left)
    assert first.site == "A" and "A" not in first.skipped
    assert first.why.endswith("; a probe job of a site in test")
    busy = choose(Needs(), sites, {"A": Load(queued=1)}, {}, 10.0, left)
    assert busy.site == "B"
    assert busy.skipped["A"].endswith(
        "1 probe job(s) there, at most 1 at once; until a probe job finishes"
    )


def test_an_operators_test_site_takes_only_jobs_that_name_it() -> None:
    d = choose(Needs(), [SiteConfig("A", status="test"), SiteConfig("B")], {}, {}, 10.0)
    assert d.site == "B"
    assert d.skipped["A"] == "status test: takes only jobs that name it"


def test_a_site_left_out_for_the_task_still_takes_a_job_with_nowhere_else_to_go() -> None:
    left = LeftOut(excluded={"A": "task t: 3 failed"})
    d = choose(Needs(), [SiteConfig("A"), SiteConfig("B")], {}, {}, 10.0, left)
    assert (d.site, d.skipped) == ("B", {"A": "task t: 3 failed"})
    alone = choose(Needs(sites=("A",)), [SiteConfig("A")], {}, {}, 10.0, left)
    assert alone.site == "A"
    assert alone.why.startswith("site A although left out (task t: 3 failed): no other site fits")


def test_a_site_whose_jobs_all_fail_goes_to_test() -> None:
    policy = HealthPolicy(min_failures=10)
    assert judge(SiteHealth("A", "online", failed=10), policy, T0) == Verdict(
        "test", "all 10 jobs that ended here lately failed", T0
    )
    assert judge(SiteHealth("A", "online", failed=9), policy, T0) is None
    assert judge(SiteHealth("A", "online", failed=50, finished=1), policy, T0) is None


def test_a_site_whose_pilots_stopped_claiming_or_jobs_stopped_starting_goes_to_test() -> None:
    policy = HealthPolicy(idle_s=3600, start_timeout_s=900)
    idle = judge(SiteHealth("A", "online", idle=4), policy, T0)
    stuck = judge(SiteHealth("A", "online", stuck=2), policy, T0)
    assert idle == Verdict("test", "no pilot claimed a job for 3600 s while 4 were activated", T0)
    assert stuck == Verdict("test", "2 job(s) sent to pilots more than 900 s ago never started", T0)


def test_a_probed_site_goes_online_when_probes_finish_or_is_probed_again_later() -> None:
    policy = HealthPolicy(probe_jobs=2, probe_interval_s=600)
    probed = SiteHealth("A", "test", "automatic", failed=0, finished=1)
    assert judge(probed, policy, T0) == Verdict("online", "1 probe job(s) finished, 0 failed", None)
    failed = judge(SiteHealth("A", "test", "automatic", failed=2), policy, T0)
    assert failed is not None and (failed.status, failed.probe_at) == ("test", at(10))
    assert judge(SiteHealth("A", "test", "automatic", failed=1), policy, T0) is None


def test_the_rule_leaves_an_operators_status_alone() -> None:
    policy = HealthPolicy(min_failures=1)
    for status, by in [("brokeroff", None), ("offline", "user.alice"), ("test", "user.alice")]:
        assert judge(SiteHealth("A", status, by, failed=20, idle=3), policy, T0) is None
