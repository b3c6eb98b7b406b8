"""``python -m pilot_agent``: the pilot as a batch system starts it."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.timeout(60)
def test_a_pilot_that_never_reaches_rabbitmq_leaves_when_idle_and_fails() -> None:
    # Given a pilot with a broker URL nothing listens on, and 1 s of patience for a job
    env = {
        "PANDAMQ_BROKER_URL": "amqp://guest:guest@127.0.0.1:1//",
        "PANDAMQ_RECONNECT_INITIAL_DELAY_S": "0.1",
        "PANDAMQ_RECONNECT_MAX_DELAY_S": "0.2",
    }
    # When it runs
    done = subprocess.run(
        [sys.executable, "-m", "pilot_agent", "--site=NOWHERE", "--max-idle=1"],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=50,
    )
    # Then it leaves, with exit code 1 and one line saying why: a batch system sees it failed
    assert done.returncode == 1, done.stderr
    assert "pilot: error: never reached the message broker" in done.stderr


def test_bad_arguments_are_one_line_and_exit_code_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pilot_agent", "--site=BAD SITE"],
        check=False,
        capture_output=True,
        text=True,
        env={"PANDAMQ_BROKER_URL": "amqp://guest:guest@127.0.0.1:1//"},
        timeout=50,
    )
    assert done.returncode == 2
    assert done.stderr.strip().startswith("pilot: error: site 'BAD SITE'"), done.stderr
