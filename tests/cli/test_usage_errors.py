"""Click's own errors (a missing argument, an unknown command or option, a bad value)
are one ``pandamq: error:`` line and exit 2, like pandamq's."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from cli.main import pandamq


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["submit"], "Missing argument 'SOURCE'. (see `pandamq submit --help`)"),
        (["nosuch"], "No such command 'nosuch'. (see `pandamq --help`)"),
        (["--bogus", "jobs"], "No such option '--bogus'"),
        (["jobs", "--state"], "Option '--state' requires an argument."),
        (["top", "--interval", "0"], "Invalid value for '--interval'"),
        (["sites", "set-status"], "Missing argument 'NAME'. (see `pandamq sites set-status"),
    ],
)
def test_a_usage_error_is_one_line_and_exit_2(args: list[str], says: str) -> None:
    # Given no configuration at all
    # When a command is mistyped
    result = CliRunner(env={"PANDAMQ_CONFIG": None}).invoke(pandamq, args)
    # Then it says what is wrong on one line, in pandamq's form, and exits 2
    assert result.exit_code == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("pandamq: error: ") and says in line


def test_help_is_still_help() -> None:
    # Given the command  When it is asked for help  Then it prints the usage and exits 0
    result = CliRunner().invoke(pandamq, ["submit", "--help"])
    assert result.exit_code == 0 and result.stdout.startswith("Usage: pandamq submit")
