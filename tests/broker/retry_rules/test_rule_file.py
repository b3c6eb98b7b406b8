"""A retry rule file is accepted whole or refused whole, with one line naming the rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.errors import BadInput
from broker.retry_rules.rule_file import read_rules
from broker.retry_rules.rules import Action, RetryRule

GOOD = """
[rules.lost-heartbeat-twice]
error_family = "dispatcher"
error_code = 100
action = "limit_retry"
max_attempts = 2

[rules.segfault-trial]
error_family = "pilot"
error_code = 1305
diagnostic = "Segmentation (fault|violation)"
site = "CERN"
action = "no_retry"
passive = true
"""


def rules_in(tmp_path: Path, text: str, name: str = "retry-rules.toml") -> list[RetryRule]:
    path = tmp_path / name
    path.write_text(text)
    return read_rules(path)


def test_a_good_file_gives_its_rules_in_file_order(tmp_path: Path) -> None:
    rules = rules_in(tmp_path, GOOD)
    assert [r.name for r in rules] == ["lost-heartbeat-twice", "segfault-trial"]
    assert rules[0] == RetryRule(
        "lost-heartbeat-twice", Action.LIMIT_RETRY, "dispatcher", 100, max_attempts=2
    )
    assert rules[1].passive and rules[1].site == "CERN"


def test_the_same_rules_in_yaml(tmp_path: Path) -> None:
    yaml_text = """
rules:
  lost-heartbeat-twice:
    error_family: dispatcher
    error_code: 100
    action: limit_retry
    max_attempts: 2
  segfault-trial:
    error_family: pilot
    error_code: 1305
    diagnostic: "Segmentation (fault|violation)"
    site: CERN
    action: no_retry
    passive: true
"""
    assert rules_in(tmp_path, yaml_text, "rules.yaml") == rules_in(tmp_path, GOOD)


def test_no_rules_means_only_the_defaults(tmp_path: Path) -> None:
    assert rules_in(tmp_path, "# nothing yet\n") == []


BAD = [
    (
        '[rules.r1]\naction = "no_retry"\n[rules.r2]\naction = "retry_later"\n',
        "rule r2: unknown action 'retry_later'; expected one of no_retry, limit_retry,",
    ),
    ('[rules.r1]\nerror_family = "pilot"\n', "rule r1: no action"),
    (
        '[rules.r1]\naction = "no_retry"\ndiagnostic = "Segmentation (fault"\n',
        "rule r1: diagnostic 'Segmentation (fault' is not a valid regular expression",
    ),
    (
        '[rules.r1]\naction = "limit_retry"\nerror_family = "pilot"\n',
        "rule r1: limit_retry needs max_attempts",
    ),
    (
        '[rules.r1]\naction = "limit_retry"\nmax_attempts = 0\n',
        "rule r1: max_attempts must be an integer of at least 1, got 0",
    ),
    (
        '[rules.r1]\naction = "no_retry"\nmax_attempts = 2\n',
        "rule r1: max_attempts goes with limit_retry only, not no_retry",
    ),
    (
        '[rules.r1]\naction = "no_retry"\nerror_family = "pilot"\nerror_code = 1305\n'
        '[rules.r2]\naction = "increase_memory"\nerror_code = 1305\nerror_family = "pilot"\n',
        "rule r2 contradicts rule r1: both match pilot 1305 (no_retry there, increase_memory",
    ),
    (
        '[rules.r1]\naction = "limit_retry"\nmax_attempts = 2\nexit_code = 3\n'
        '[rules.r2]\naction = "limit_retry"\nmax_attempts = 4\nexit_code = 3\n',
        "rule r2 contradicts rule r1: both match exit code 3 (limit_retry 2 there",
    ),
    (
        '[rules.r1]\naction = "no_retry"\nexit_code = 3\n'
        '[rules.r2]\naction = "no_retry"\nexit_code = 3\n',
        "rule r2 repeats rule r1",
    ),
    ('[rules.r1]\naction = "no_retry"\nerror_code = 1305\n', "rule r1: error_code needs"),
    ('[rules.r1]\naction = "no_retry"\nerror_family = "payload"\n', "unknown error_family"),
    ('[rules.r1]\naction = "no_retry"\nexitcode = 3\n', "rule r1: unknown key(s) exitcode"),
    ('[rules.r1]\naction = "no_retry"\npassive = "yes"\n', "rule r1: passive must be"),
    ('[rules.out-of-memory]\naction = "no_retry"\n', "the name is a default rule's"),
    ('[rule.r1]\naction = "no_retry"\n', "unknown table(s) rule"),
    ('[rules.r1\naction = "no_retry"\n', "is not valid TOML"),
]


@pytest.mark.parametrize(("text", "says"), BAD, ids=[s.split(":")[0] for _, s in BAD])
def test_a_bad_rule_refuses_the_whole_file_in_one_line(
    tmp_path: Path, text: str, says: str
) -> None:
    with pytest.raises(BadInput) as refused:
        rules_in(tmp_path, text)
    message = str(refused.value)
    assert says in message and "\n" not in message


def test_an_active_and_a_passive_rule_may_share_a_match(tmp_path: Path) -> None:
    # (the passive one is tried out before it replaces the active one)
    text = (
        '[rules.now]\naction = "limit_retry"\nmax_attempts = 2\nexit_code = 3\n'
        '[rules.trial]\naction = "no_retry"\nexit_code = 3\npassive = true\n'
    )
    assert [r.name for r in rules_in(tmp_path, text)] == ["now", "trial"]


def test_a_yaml_file_naming_a_rule_twice_is_refused(tmp_path: Path) -> None:
    text = "rules:\n  r1: {action: no_retry}\n  r1: {action: increase_memory}\n"
    with pytest.raises(BadInput, match="key 'r1' given twice"):
        rules_in(tmp_path, text, "rules.yml")
