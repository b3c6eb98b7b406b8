"""``python -m pilot_agent``: the pilot as a batch system starts it."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from tests.services import RABBITMQ_HOST


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


@pytest.mark.services
def test_a_pilot_on_a_vhost_that_does_not_exist_exits_at_once_saying_how_to_create_it() -> None:
    # Given a pilot whose broker URL names a vhost RabbitMQ does not have
    vhost = f"pandamq-missing-{uuid.uuid4().hex[:10]}"
    env = {"PANDAMQ_BROKER_URL": f"amqp://guest:guest@{RABBITMQ_HOST}/{vhost}"}
    # When it runs
    done = subprocess.run(
        [sys.executable, "-m", "pilot_agent", "--site=SITE_A"],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=50,
    )
    # Then it exits with code 1 and one line giving the commands, without waiting
    assert done.returncode == 1, done.stderr
    [error] = [line for line in done.stderr.splitlines() if "error" in line]
    assert error.startswith("pilot: error: RabbitMQ refused vhost"), done.stderr
    assert f"`rabbitmqctl add_vhost {vhost}`" in error
    assert "retry" not in done.stderr


@pytest.mark.services
def test_a_pilot_for_a_site_without_queues_exits_2_with_one_line(
    services: tuple[str, str],
) -> None:
    # Given RabbitMQ with no job queues for SITE_NOPE, and a pilot patient for 1 s only
    env = {
        "PANDAMQ_BROKER_URL": services[0],
        "PANDAMQ_SITE_QUEUES_WAIT_S": "1",
        "PANDAMQ_RECONNECT_INITIAL_DELAY_S": "0.1",
        "PANDAMQ_RECONNECT_MAX_DELAY_S": "0.2",
    }
    # When it runs
    done = subprocess.run(
        [sys.executable, "-m", "pilot_agent", "--site=SITE_NOPE"],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=50,
    )
    # Then it exits with code 2 (bad input) and one line saying what is wrong
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    [error] = [line for line in done.stderr.splitlines() if "error" in line]
    assert error.startswith(
        "pilot: error: site SITE_NOPE is not in the catalogue, or the broker service has not "
        "declared its queues yet"
    ), done.stderr
