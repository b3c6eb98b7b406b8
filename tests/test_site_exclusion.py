"""Failing sites left out: a site whose jobs all fail goes to test, gets probe jobs and
comes back online once they finish, on every backend."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.brokerage.catalogue import SiteConfig
from broker.metrics import SITE_STATUS_CHANGES
from broker.protocol import JobSpec
from broker.settings import Settings
from broker.store.clock import as_utc, now
from broker.store.engine import transaction
from broker.store.site_status import status_history, statuses
from broker.store.sites import apply_catalogue
from tests.cli.test_brokerage_commands import cli
from tests.harness import System, wait_for

#: The payload fails on a worker node that has the marker file in its pilot's work
#: directory (the payload runs in <work_dir>/<pilot>/<job>.<attempt>): a broken site.
COMMAND = "test ! -e ../../BROKEN"


@pytest.fixture
def probing(settings: Settings) -> Iterator[System]:
    """A system whose automatic rule judges often, on few jobs, with one probe at a time."""
    s = System(
        settings.replace(
            brokerage_interval_s=0.2,
            site_test_window_s=120.0,
            site_test_min_failures=3,
            site_probe_jobs=1,
            site_probe_interval_s=0.5,
        )
    )
    yield s
    s.close()


def status(system: System, site: str) -> dict[str, Any]:
    with transaction(system.engine) as conn:
        return next(r for r in statuses(conn) if r["name"] == site)


def jobs(system: System, sites: list[str], n: int) -> list[str]:
    return system.submit(*(JobSpec(command=COMMAND, sites=sites, max_attempts=1) for _ in range(n)))


def at_site(system: System, ids: list[str], site: str) -> list[dict[str, Any]]:
    return [j for j in map(system.job, ids) if j["site"] == site]


def changes(site: str, before: str, after: str) -> float:
    return SITE_STATUS_CHANGES.labels(site, before, after)._value.get()  # type: ignore[no-any-return]


def test_a_site_whose_jobs_all_fail_is_left_out_probed_and_brought_back(
    probing: System, tmp_path: Path
) -> None:
    system = probing
    # (named so that, weights equal, brokerage tries the failing site first)
    tag = uuid.uuid4().hex[:8].upper()
    bad, good = f"SITE_A_{tag}", f"SITE_B_{tag}"
    with transaction(system.engine) as conn:
        apply_catalogue(conn, [SiteConfig(bad), SiteConfig(good)], by="operator")
    broken = tmp_path / "bad-nodes"
    broken.mkdir()
    (broken / "BROKEN").touch()
    system.start_broker()
    system.start_pilot(bad, settings=system.settings.replace(work_dir=str(broken)))
    system.start_pilot(good, settings=system.settings.replace(work_dir=str(tmp_path / "ok")))

    # Given a site whose worker nodes are broken: its 3 jobs fail
    first = jobs(system, [bad], 3)
    assert set(system.wait_final(first).values()) == {"failed"}
    # Then the automatic rule puts it in test, saying why
    wait_for(lambda: status(system, bad)["status"] == "test", what=f"{bad} in test")
    row = status(system, bad)
    assert row["status_by"] == "automatic"
    assert row["status_reason"] == "all 3 jobs that ended here lately failed"

    # When jobs may go to either site, the site in test gets one probe job, the others
    # go elsewhere with the reason (and when it ends)
    second = jobs(system, [bad, good], 4)
    system.wait_final(second)
    probes = at_site(system, second, bad)
    elsewhere = at_site(system, second, good)
    assert probes and all(j["state"] == "failed" for j in probes)
    assert elsewhere and all(j["state"] == "finished" for j in elsewhere)
    reasons = [j["brokerage"]["skipped"].get(bad, "") for j in elsewhere]
    assert any(
        r.startswith("status test since")
        and "all 3 jobs that ended here lately failed" in r
        and "at most 1 at once; until a probe job finishes" in r
        for r in reasons
    ), reasons
    # And `pandamq job ID` says so
    shown = json.loads(cli(system, "job", elsewhere[-1]["id"], "--json").stdout)
    assert shown["brokerage"]["skipped"][bad].startswith("status test since")
    assert "status test since" in cli(system, "job", elsewhere[-1]["id"]).stdout
    # And, its probe failed, it stays in test and is probed again later
    wait_for(
        lambda: "probe job(s) failed" in (status(system, bad)["status_reason"] or ""),
        what=f"{bad}'s probes judged",
    )
    row = status(system, bad)
    assert row["status"] == "test" and row["status_by"] == "automatic"
    probe_at = as_utc(row["probe_at"])

    # When the site is repaired and its next probes may go
    (broken / "BROKEN").unlink()
    wait_for(lambda: now() > probe_at, what="next probes due")
    third = jobs(system, [bad, good], 4)
    assert set(system.wait_final(third).values()) == {"finished"}
    assert at_site(system, third, bad)
    # Then it is back online, and the history says who did what
    wait_for(lambda: status(system, bad)["status"] == "online", what=f"{bad} back online")
    with transaction(system.engine) as conn:
        history = status_history(conn, bad)
    moves = [(h["from_status"], h["to_status"], h["status_by"]) for h in reversed(history)]
    assert moves[0] == ("online", "test", "automatic")
    assert moves[-1] == ("test", "online", "automatic")
    assert ("test", "test", "automatic") in moves
    assert history[0]["reason"].endswith("probe job(s) finished, 0 failed")
    assert changes(bad, "online", "test") == 1 and changes(bad, "test", "online") == 1
    # And new jobs go there again like anywhere else
    fourth = jobs(system, [bad, good], 4)
    system.wait_final(fourth)
    assert all(bad not in system.job(i)["brokerage"]["skipped"] for i in fourth)
