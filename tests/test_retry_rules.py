"""Retry rules through the whole system, on every backend: a passive rule only counts,
an active one changes the retry; retries back off in ``defined``."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime

import pytest
from click.testing import CliRunner
from prometheus_client import REGISTRY

from broker.protocol import JobSpec
from broker.retry_rules.rules import Action, RetryRule
from broker.settings import Settings
from broker.store.engine import transaction
from broker.store.retry_rules import apply_rules
from cli.main import pandamq
from tests.harness import System

#: A short backoff, and a periodic pass often enough to set retries up soon after it.
BACKOFF_S = 0.4
SEGFAULT = "echo 'Segmentation fault' >&2; exit {}"


@pytest.fixture
def system(settings: Settings) -> Iterator[System]:
    """The system with a backoff, and the operators' rules removed after the test (the
    session's PostgreSQL database is shared)."""
    s = System(settings.replace(retry_backoff_s=BACKOFF_S, brokerage_interval_s=0.05))
    try:
        yield s
        with transaction(s.engine) as conn:
            apply_rules(conn, [])
    finally:
        s.close()


def given_rules(system: System, *rules: RetryRule) -> None:
    with transaction(system.engine) as conn:
        apply_rules(conn, rules)


def matches(rule: RetryRule) -> float:
    labels = {"rule": rule.name, "action": rule.action.value, "passive": str(rule.passive).lower()}
    return REGISTRY.get_sample_value("pandamq_retry_rule_matches_total", labels) or 0.0


def decisions(system: System, job_id: str) -> list[str | None]:
    return [a["retry_decision"] for a in system.job(job_id)["attempts"]]


def test_a_passive_rule_only_counts(system: System, caplog: pytest.LogCaptureFixture) -> None:
    # Given a passive rule that would stop retries of a payload failure at the test's site
    caplog.set_level(logging.INFO, logger="broker.operations.retries")
    site = system.new_site()
    trial = RetryRule(
        f"trial-{site}", Action.NO_RETRY, "pilot", 1305, diagnostic="Segmentation", site=site
    )
    trial = RetryRule(**{**trial.__dict__, "passive": True})
    given_rules(system, trial)
    before = matches(trial)
    system.start_broker()
    system.start_pilot(site)
    # When a job fails that way
    (job_id,) = system.submit(JobSpec(command=SEGFAULT.format(3), site=site, max_attempts=2))
    assert system.wait_final([job_id]) == {job_id: "failed"}
    # Then it was retried as without the rule, to its max_attempts
    assert [a["exit_code"] for a in system.job(job_id)["attempts"]] == [3, 3]
    first, last = decisions(system, job_id)
    assert first is not None and first.startswith("retried: retryable failure; backoff")
    assert last == "not retried: attempt 2 was the last of 2"
    # And the rule was counted at each failure, and logged
    assert matches(trial) - before == 2
    assert f"passive retry rule {trial.name} matched (it would no_retry)" in caplog.text


def test_an_active_rule_changes_the_retry(system: System) -> None:
    # Given, at the test's site, a rule that stops retries of exit code 3 and one that
    # allows exit code 4 two attempts
    site = system.new_site()
    stop = RetryRule(f"stop-{site}", Action.NO_RETRY, "pilot", 1305, exit_code=3, site=site)
    twice = RetryRule(f"twice-{site}", Action.LIMIT_RETRY, exit_code=4, site=site, max_attempts=2)
    given_rules(system, stop, twice)
    counted = matches(stop), matches(twice)
    system.start_broker()
    system.start_pilot(site)
    # When jobs that may have 3 and 5 attempts fail with those codes
    three, four = system.submit(
        JobSpec(command=SEGFAULT.format(3), site=site, max_attempts=3),
        JobSpec(command=SEGFAULT.format(4), site=site, max_attempts=5),
    )
    assert system.wait_final([three, four]) == {three: "failed", four: "failed"}
    # Then the first is not retried, the second retried once, each saying by which rule
    assert decisions(system, three) == [f"not retried: rule {stop.name} (no_retry)"]
    assert decisions(system, four) == [
        f"retried: retryable failure by rule {twice.name} (limit_retry 2); backoff "
        + decisions(system, four)[0].split("; backoff ")[1],  # type: ignore[union-attr]
        f"not retried: attempt 2 was the last of 2 (rule {twice.name} (limit_retry 2))",
    ]
    assert (matches(stop) - counted[0], matches(twice) - counted[1]) == (1, 2)
    # And `pandamq job` shows the decision on the attempt
    shown = CliRunner(env={"PANDAMQ_BROKER_URL": system.settings.broker_url}).invoke(
        pandamq, ["job", three, "--json"]
    )
    assert shown.exit_code == 0, shown.output
    attempts = json.loads(shown.output)["attempts"]
    assert attempts[0]["retry_decision"] == f"not retried: rule {stop.name} (no_retry)"


def test_a_retry_waits_for_its_backoff_in_defined(system: System) -> None:
    # Given a job whose payload fails once, then succeeds
    site = system.new_site()
    system.start_broker()
    system.start_pilot(site)
    flag = f"{system.settings.work_dir}/{site}.failed-once"
    once = f"if [ -e {flag} ]; then exit 0; fi; mkdir -p $(dirname {flag}); touch {flag}; exit 7"
    (job_id,) = system.submit(JobSpec(command=once, site=site))
    # When it fails and is retried
    assert system.wait_final([job_id]) == {job_id: "finished"}
    # Then its second attempt waited in defined at least half the backoff before it was
    # set up (the jitter draws from the upper half)
    moves = {(t["attempt"], t["to_state"]): t for t in system.job(job_id)["transitions"]}
    defined, assigned = moves[(2, "defined")], moves[(2, "assigned")]
    waited = _at(assigned["at"]) - _at(defined["at"])
    assert waited.total_seconds() >= BACKOFF_S / 2
    assert "; backoff " in defined["reason"]
    assert "backoff of the retry over" in assigned["reason"]


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_retry_elsewhere_runs_the_next_attempt_at_another_site(system: System) -> None:
    # Given two sites with a pilot each, and a rule sending a failure's retry elsewhere
    a, b = system.new_site(), system.new_site()
    token = f"flaky-{a}"
    given_rules(system, RetryRule(f"elsewhere-{a}", Action.RETRY_ELSEWHERE, diagnostic=token))
    system.start_broker()
    system.start_pilot(a)
    system.start_pilot(b)
    # When a job that may run at either fails its first attempt with that diagnostic
    flag = f"{system.settings.work_dir}/{a}.failed-once"
    once = (
        f"if [ -e {flag} ]; then exit 0; fi; mkdir -p $(dirname {flag}); touch {flag}; "
        f"echo {token} >&2; exit 7"
    )
    (job_id,) = system.submit(JobSpec(command=once, sites=[a, b]))
    assert system.wait_final([job_id]) == {job_id: "finished"}
    # Then its second attempt ran at the other site
    first, second = (x["site"] for x in system.job(job_id)["attempts"])
    assert {first, second} == {a, b}
    assert decisions(system, job_id)[0].startswith(  # type: ignore[union-attr]
        f"retried: retryable failure, at another site by rule elsewhere-{a} (retry_elsewhere)"
    )
