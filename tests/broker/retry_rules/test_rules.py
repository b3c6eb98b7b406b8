"""Matching a failure against retry rules: the most specific active rule decides."""

from __future__ import annotations

from broker.retry_rules.defaults import DEFAULT_RULES
from broker.retry_rules.rules import Action, Failed, RetryRule, RuleSet

A = Action
PAYLOAD = Failed("pilot", 1305, exit_code=3, diagnostic="Segmentation fault", site="CERN")


def decider(rules: RuleSet, failed: Failed = PAYLOAD) -> str | None:
    rule = rules.ruling(failed).rule
    return None if rule is None else rule.name


def test_a_rule_matches_only_when_every_field_it_names_does() -> None:
    rule = RetryRule("r", A.NO_RETRY, error_family="pilot", error_code=1305, site="CERN")
    assert rule.matches(PAYLOAD)
    assert not rule.matches(Failed("pilot", 1305, site="BNL"))
    assert not rule.matches(Failed("pilot", 1308, site="CERN"))
    assert not rule.matches(Failed("ddm", 1305, site="CERN"))


def test_the_diagnostic_is_searched_with_the_regex() -> None:
    rule = RetryRule("r", A.NO_RETRY, diagnostic=r"Segmentation\s+fault")
    assert rule.matches(PAYLOAD)
    assert not rule.matches(Failed("pilot", 1305, diagnostic="Bus error"))
    assert not rule.matches(Failed("pilot", 1305))


def test_the_rule_naming_more_fields_wins_whatever_their_order() -> None:
    # Given a rule for the whole family, one for the code, one for the code at a site
    family = RetryRule("family", A.LIMIT_RETRY, error_family="pilot", max_attempts=2)
    code = RetryRule("code", A.INCREASE_WALLTIME, error_family="pilot", error_code=1305)
    at_site = RetryRule("at-site", A.RETRY_ELSEWHERE, "pilot", 1305, site="CERN")
    rules = RuleSet.of([family, at_site, code], ())
    # Then the most specific matching one decides
    assert decider(rules) == "at-site"
    assert decider(rules, Failed("pilot", 1305, site="BNL")) == "code"
    assert decider(rules, Failed("pilot", 1099, site="BNL")) == "family"
    assert decider(rules, Failed("ddm", 203)) is None


def test_at_equal_count_a_task_beats_a_site_beats_a_code() -> None:
    on_task = RetryRule("task", A.NO_RETRY, task_id="T1")
    on_site = RetryRule("site", A.LIMIT_RETRY, site="CERN", max_attempts=2)
    rules = RuleSet.of([on_site, on_task], ())
    assert decider(rules, Failed("pilot", 1305, site="CERN", task_id="T1")) == "task"
    exit_only = RetryRule("exit", A.NO_RETRY, exit_code=3)
    with_code = RetryRule("code", A.INCREASE_MEMORY, error_family="pilot", error_code=1305)
    # (family + code) names two fields, the exit code one
    assert decider(RuleSet.of([exit_only, with_code], ())) == "code"


def test_at_equal_rank_the_rule_earlier_in_the_file_wins() -> None:
    first = RetryRule("first", A.NO_RETRY, diagnostic="Segmentation")
    second = RetryRule("second", A.INCREASE_MEMORY, diagnostic="fault")
    assert decider(RuleSet.of([first, second], ())) == "first"
    assert decider(RuleSet.of([second, first], ())) == "second"


def test_a_passive_rule_does_not_decide_but_is_reported_when_it_would_have() -> None:
    # Given a passive rule more specific than an active one
    trial = RetryRule("trial", A.NO_RETRY, "pilot", 1305, exit_code=3, passive=True)
    active = RetryRule("active", A.LIMIT_RETRY, "pilot", 1305, max_attempts=2)
    broad = RetryRule("broad", A.NO_RETRY, error_family="pilot", passive=True)
    ruling = RuleSet.of([trial, active, broad], ()).ruling(PAYLOAD)
    # Then the active one decides; only the passive one above it would have
    assert ruling.rule is active
    assert ruling.passive == (trial,)


def test_an_active_operator_rule_replaces_the_default_with_the_same_match() -> None:
    # Given an operator's rule matching what the out-of-memory default matches
    oom = Failed("pilot", 1308)
    mine = RetryRule("oom-elsewhere", A.RETRY_ELSEWHERE, "pilot", 1308)
    rules = RuleSet.of([mine], DEFAULT_RULES)
    # Then it decides, and the default is reported replaced
    assert decider(rules, oom) == "oom-elsewhere"
    assert rules.overridden == {"out-of-memory": "oom-elsewhere"}
    # But a passive one replaces nothing: the default still decides
    trial = RuleSet.of([RetryRule("t", A.NO_RETRY, "pilot", 1308, passive=True)], DEFAULT_RULES)
    assert decider(trial, oom) == "out-of-memory"
    assert [r.name for r in trial.ruling(oom).passive] == ["t"]


def test_an_operator_rule_beats_a_default_of_equal_rank() -> None:
    # Given a default and an operator's rule that name the same fields, both matching
    default = RetryRule("d", A.NO_RETRY, diagnostic="Segm", source="default")
    mine = RetryRule("mine", A.INCREASE_MEMORY, diagnostic="fault")
    # Then the operator's decides, although the default comes first
    assert decider(RuleSet.of([mine], [default])) == "mine"


def test_the_defaults_are_todays_retry_behaviour() -> None:
    rules = RuleSet.of([], DEFAULT_RULES)
    actions = {r.name: r.action for r in DEFAULT_RULES if r.matches(Failed("pilot", 1306))}
    assert actions == {"payload-not-started": A.NO_RETRY}
    assert decider(rules, Failed("pilot", 1305, exit_code=127)) == "command-not-found"
    assert decider(rules, Failed("pilot", 1305, exit_code=126)) == "command-not-executable"
    assert decider(rules, Failed("ddm", 204)) == "output-name-taken"
    assert decider(rules, Failed("pilot", 1308)) == "out-of-memory"
    assert decider(rules, Failed("pilot", 1305, exit_code=1)) is None
    assert decider(rules, Failed("dispatcher", 100)) is None
