"""``pandamq retry-rules apply FILE`` and ``pandamq retry-rules [list]``: the operators'
rules applied whole or refused whole, with one line naming the rule."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cli.main import pandamq
from tests.harness import System


@pytest.fixture
def rules_system(system: System) -> Iterator[System]:
    """``system``, with the operators' rules removed after the test (shared database)."""
    yield system
    assert cli(system, "retry-rules", "apply", str(_empty(system))).exit_code == 0


def _empty(system: System) -> Path:
    path = Path(system.settings.work_dir).parent / "no-rules.toml"
    path.write_text("")
    return path


def cli(system: System, *args: str) -> Result:
    """The command as an operator runs it: it opens the database."""
    env = {"PANDAMQ_DATABASE_URL": system.settings.database_url, "PANDAMQ_CONFIG": None}
    return CliRunner(env=env).invoke(pandamq, list(args))


def rule_file(tmp_path: Path, text: str, name: str = "retry-rules.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def good(site: str) -> str:
    return f"""
[rules.lost-heartbeat-twice]
error_family = "dispatcher"
error_code = 100
action = "limit_retry"
max_attempts = 2

[rules.oom-elsewhere]
error_family = "pilot"
error_code = 1308
action = "retry_elsewhere"

[rules.segfault-trial]
error_family = "pilot"
error_code = 1305
diagnostic = "Segmentation"
site = "{site}"
action = "no_retry"
passive = true
"""


def listed(system: System) -> dict[str, dict[str, object]]:
    result = cli(system, "retry-rules", "list", "--json")
    assert result.exit_code == 0, result.output
    return {r["name"]: r for r in json.loads(result.output)}


def test_apply_adds_the_rules_and_again_changes_nothing(
    rules_system: System, tmp_path: Path
) -> None:
    # Given a rule file
    site = rules_system.new_site()
    path = rule_file(tmp_path, good(site))
    # When it is applied, twice
    first = cli(rules_system, "retry-rules", "apply", path)
    second = cli(rules_system, "retry-rules", "apply", path)
    # Then the first adds each rule and the second changes none
    assert first.exit_code == 0, first.output
    assert first.output.splitlines() == [
        "retry rule lost-heartbeat-twice added",
        "retry rule oom-elsewhere added",
        "retry rule segfault-trial added",
    ]
    assert second.output.splitlines() == [
        line.replace("added", "unchanged") for line in first.output.splitlines()
    ]
    # And the list shows them with the defaults, the one replaced last
    rules = listed(rules_system)
    assert rules["segfault-trial"]["passive"] is True
    assert rules["segfault-trial"]["matches"] == (
        f"pilot 1305, site {site}, diagnostic /Segmentation/"
    )
    assert rules["out-of-memory"]["overridden_by"] == "oom-elsewhere"
    assert rules["command-not-found"]["source"] == "default"
    assert list(rules)[-1] == "out-of-memory"


def test_the_list_as_a_table(rules_system: System, tmp_path: Path) -> None:
    cli(rules_system, "retry-rules", "apply", rule_file(tmp_path, good(rules_system.new_site())))
    result = cli(rules_system, "retry-rules")
    assert result.exit_code == 0, result.output
    assert "lost-heartbeat-twice" in result.output and "limit_retry 2" in result.output
    assert "oom-elsewhere" in result.output and "passive" in result.output


def test_a_file_without_a_rule_removes_the_operators_rules(
    rules_system: System, tmp_path: Path
) -> None:
    cli(rules_system, "retry-rules", "apply", rule_file(tmp_path, good(rules_system.new_site())))
    result = cli(rules_system, "retry-rules", "apply", rule_file(tmp_path, "", "empty.toml"))
    assert result.exit_code == 0, result.output
    assert "retry rule oom-elsewhere removed" in result.output
    assert all(r["source"] == "default" for r in listed(rules_system).values())


BAD = {
    "unknown action": (
        '[rules.ok]\naction = "no_retry"\nexit_code = 9\n[rules.later]\naction = "retry_later"\n',
        "rule later: unknown action 'retry_later'",
    ),
    "invalid regex": (
        '[rules.bad-regex]\naction = "no_retry"\ndiagnostic = "(unclosed"\n',
        "rule bad-regex: diagnostic '(unclosed' is not a valid regular expression",
    ),
    "missing N": (
        '[rules.limited]\naction = "limit_retry"\nexit_code = 9\n',
        "rule limited: limit_retry needs max_attempts",
    ),
    "contradiction": (
        '[rules.a]\naction = "no_retry"\nexit_code = 9\n'
        '[rules.b]\naction = "increase_memory"\nexit_code = 9\n',
        "rule b contradicts rule a: both match exit code 9 (no_retry there, increase_memory here)",
    ),
    "unknown site": (
        '[rules.there]\naction = "no_retry"\nsite = "NO_SUCH_SITE_X"\n',
        "retry rule there: no site 'NO_SUCH_SITE_X' in the site catalogue",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_file_is_refused_whole_with_one_line(
    rules_system: System, tmp_path: Path, case: str
) -> None:
    # Given rules applied already
    cli(rules_system, "retry-rules", "apply", rule_file(tmp_path, good(rules_system.new_site())))
    before = listed(rules_system)
    # When a file with one bad rule is applied
    text, says = BAD[case]
    result = cli(rules_system, "retry-rules", "apply", rule_file(tmp_path, text, "bad.toml"))
    # Then it is refused with one line naming the rule, exit 2, and nothing changed
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "pandamq: error:" in result.output
    assert says in result.output
    assert listed(rules_system) == before
