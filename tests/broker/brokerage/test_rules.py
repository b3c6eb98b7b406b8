"""Brokerage rules: filters with a reason for every skipped site, PanDA's weights."""

from __future__ import annotations

from typing import Any

from broker.brokerage.catalogue import ResourceSlot, SiteConfig
from broker.brokerage.rules import Decision, Load, Needs, choose

SCORE = ResourceSlot("SCORE", 1, 2000)
MCORE_HIMEM = ResourceSlot("MCORE_HIMEM", 8, 32000)


def site(name: str, **kw: Any) -> SiteConfig:
    return SiteConfig(name, slots=(SCORE, MCORE_HIMEM), **kw)


def decide(
    needs: Needs,
    *sites: SiteConfig,
    loads: dict[str, Load] | None = None,
    data: dict[str, float] | None = None,
) -> Decision:
    return choose(needs, sites, loads or {}, data or {}, 10.0)


def test_offline_and_brokeroff_sites_are_never_chosen() -> None:
    d = decide(Needs(), site("A", status="offline"), site("B", status="brokeroff"), site("C"))
    assert d.site == "C"
    assert d.skipped == {
        "A": "status offline",
        "B": "status brokeroff: takes only jobs that name it",
    }


def test_a_brokeroff_site_takes_a_job_that_names_it_and_offline_never() -> None:
    assert decide(Needs(site="B"), site("B", status="brokeroff")).site == "B"
    assert decide(Needs(site="A"), site("A", status="offline")).site is None


def test_a_job_needing_64_gb_fits_nowhere_and_the_reason_names_memory() -> None:
    d = decide(Needs(cores=8, memory_mb=64000), site("A"), site("B"))
    assert d.site is None
    assert d.why.startswith("no site fits the job")
    assert "memory: needs 64000 MB" in d.skipped["A"] and "memory" in d.why


def test_too_many_cores_names_cores() -> None:
    d = decide(Needs(cores=16), site("A"))
    assert d.skipped["A"] == "cores: needs 16, the largest slot has 8"


def test_a_job_needing_a_release_only_goes_where_it_is() -> None:
    d = decide(Needs(release="24.0"), site("A", releases=("23.0",)), site("B", releases=("24.0",)))
    assert d.site == "B"
    assert d.skipped["A"] == "release 24.0 not installed (provides: 23.0)"


def test_walltime_above_the_site_maximum_is_skipped() -> None:
    d = decide(Needs(walltime_s=200000), site("A", max_walltime_s=86400))
    assert "walltime 200000 s above" in d.skipped["A"]


def test_fewer_queued_per_running_wins() -> None:
    loads = {"A": Load(queued=50, running=10), "B": Load(queued=5, running=10)}
    d = decide(Needs(), site("A"), site("B"), loads=loads)
    assert d.site == "B" and d.weights["B"] > d.weights["A"]


def test_data_at_a_site_wins_at_equal_load_and_a_full_queue_spills_over() -> None:
    loads = {"A": Load(queued=3), "B": Load(queued=3)}
    assert decide(Needs(), site("A"), site("B"), loads=loads, data={"A": 1.0}).site == "A"
    full = {"A": Load(queued=3), "B": Load(queued=0)}
    d = decide(Needs(), site("A", max_queued=3), site("B"), loads=full, data={"A": 1.0})
    assert d.site == "B"
    assert d.skipped["A"] == "queue full: 3 jobs queued, the site's cap is 3"


def test_the_record_says_why_and_lists_every_site() -> None:
    d = decide(Needs(), site("A"), site("B", status="offline"))
    record = d.record()
    assert record["site"] == "A" and "highest weight" in record["why"]
    assert set(record["weights"]) == {"A"} and set(record["skipped"]) == {"B"}


def test_allowed_sites_limit_the_candidates() -> None:
    catalogue = {n: site(n) for n in ("A", "B", "C")}
    assert [s.name for s in Needs(sites=("C", "A")).candidates(catalogue)] == ["C", "A"]
    assert [s.name for s in Needs(site="B").candidates(catalogue)] == ["B"]
    assert len(Needs().candidates(catalogue)) == 3
