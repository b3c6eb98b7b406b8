"""Backoff after an outage: capped exponential delays with jitter, one log line per attempt."""

from __future__ import annotations

import logging
import threading

import pytest

from broker.errors import (
    BrokerRefused,
    BrokerUnavailable,
    ConfigError,
    DatabaseUnavailable,
    PublishFailed,
    RecoverableError,
    SchemaMissing,
    TransactionConflict,
)
from broker.reconnect import Backoff, until_stopped
from broker.settings import Settings

SETTINGS = Settings(reconnect_initial_delay_s=0.5, reconnect_max_delay_s=4.0)


@pytest.mark.parametrize(
    ("failures", "ceiling"), [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 4.0), (100, 4.0)]
)
def test_delays_double_up_to_the_cap_with_jitter_in_the_upper_half(
    failures: int, ceiling: float
) -> None:
    # Given a backoff from 0.5 s capped at 4 s
    backoff = Backoff("test", SETTINGS)
    # When the delay after some consecutive failures is drawn many times
    delays = {backoff.delay_s(failures) for _ in range(200)}
    # Then each lies in the upper half of the capped doubling, and they differ
    assert all(ceiling / 2 <= d <= ceiling for d in delays)
    assert len(delays) > 1


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (BrokerUnavailable("lost the message broker\nwhile consuming"), "RabbitMQ is unavailable"),
        (DatabaseUnavailable("cannot reach the database"), "the database is unavailable"),
        (PublishFailed("1 message(s) not accepted"), "RabbitMQ did not take a publish"),
        (
            TransactionConflict("deadlock detected (SQLSTATE 40P01)"),
            "a transaction kept losing conflicts with another process's",
        ),
    ],
)
def test_each_failed_attempt_is_one_line_naming_what_is_down_and_when_it_retries(
    error: RecoverableError, says: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a backoff
    backoff = Backoff("pilot P", SETTINGS)
    # When two attempts fail
    with caplog.at_level(logging.WARNING, logger="broker.reconnect"):
        backoff.failed(error)
        backoff.failed(error)
    # Then each logs one line: who, what is down, why, the attempt and the delay
    lines = caplog.text.splitlines()
    assert len(lines) == 2, lines
    assert f"pilot P: {says}: " in lines[0]
    assert " retry 1 in 0." in lines[0]
    assert " retry 2 in " in lines[1]
    # And the next attempt is not due yet
    assert not backoff.due()


def test_success_starts_the_next_outage_from_the_initial_delay() -> None:
    backoff = Backoff("test", SETTINGS)
    for _ in range(5):
        backoff.failed(BrokerUnavailable("down"))
    backoff.succeeded()
    assert backoff.failures == 0 and backoff.due()


def test_until_stopped_runs_the_session_again_after_each_outage() -> None:
    # Given a session that fails twice for an outage, then serves until stopped
    stop = threading.Event()
    calls: list[int] = []
    backoff = Backoff("test", Settings(reconnect_initial_delay_s=0.01, reconnect_max_delay_s=0.02))

    def session() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise DatabaseUnavailable("down")
        backoff.succeeded()
        stop.set()

    # When it runs until stopped
    until_stopped(session, backoff, stop)
    # Then it was run three times
    assert len(calls) == 3


def test_until_stopped_does_not_retry_a_permanent_error() -> None:
    def session() -> None:
        raise SchemaMissing("run `pandamq db upgrade`")

    with pytest.raises(SchemaMissing):
        until_stopped(session, Backoff("test", SETTINGS), threading.Event())


def test_reconnect_delays_come_from_the_environment_and_are_checked() -> None:
    env = {"PANDAMQ_RECONNECT_INITIAL_DELAY_S": "0.2", "PANDAMQ_RECONNECT_MAX_DELAY_S": "5"}
    s = Settings.load(environ=env)
    assert (s.reconnect_initial_delay_s, s.reconnect_max_delay_s) == (0.2, 5.0)
    with pytest.raises(ConfigError, match="reconnect_initial_delay_s"):
        Settings.load(environ={**env, "PANDAMQ_RECONNECT_INITIAL_DELAY_S": "9"})
    with pytest.raises(ConfigError, match="reconnect_initial_delay_s"):
        Settings.load(environ={**env, "PANDAMQ_RECONNECT_INITIAL_DELAY_S": "0"})


class _Refusal(Exception):
    """What py-amqp raises when RabbitMQ closes a connection as it opens: a reply code."""

    def __init__(self, reply_code: int, text: str) -> None:
        super().__init__(text)
        self.reply_code = reply_code


def test_a_vhost_refused_is_raised_at_once_saying_how_to_create_it() -> None:
    # Given a backoff for a broker URL on a vhost RabbitMQ does not have
    backoff = Backoff("test", Settings(broker_url="amqp://guest:guest@127.0.0.1:5672/nope"))
    outage = BrokerUnavailable("cannot reach the message broker")
    outage.__cause__ = _Refusal(530, "NOT_ALLOWED - vhost nope not found")
    # When the attempt to connect fails with it
    with pytest.raises(BrokerRefused) as refused:
        backoff.failed(outage)
    # Then it is not waited out: the error says how to create the vhost and let the user in
    assert "`rabbitmqctl add_vhost nope`" in str(refused.value)
    assert "`rabbitmqctl set_permissions -p nope guest '.*' '.*' '.*'`" in str(refused.value)
    assert backoff.failures == 0


def test_a_connection_forced_closed_is_waited_out() -> None:
    # Given an outage whose cause is RabbitMQ closing connections as it stops (320)
    backoff = Backoff("test", SETTINGS)
    outage = BrokerUnavailable("lost the message broker")
    outage.__cause__ = _Refusal(320, "CONNECTION_FORCED - shutdown")
    # When it is counted, Then it is a failure to wait out
    backoff.failed(outage)
    assert backoff.failures == 1
