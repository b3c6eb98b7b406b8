"""Waiting out an outage of RabbitMQ or the database: capped exponential backoff
with jitter, one log line per failed attempt.

The broker service and the pilot both use it. The delay before attempt n+1
is drawn from the upper half of ``min(max, initial * 2**(n-1))``, so that
many pilots cut off at once do not all come back in the same instant.
A refusal that waiting cannot fix (RabbitMQ has no such vhost, or the user
may not use it) is not waited out: it is raised as a ``PermanentError``
saying what to do. This module imports no SQL code: pilots use it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

from broker.errors import (
    BrokerRefused,
    DatabaseUnavailable,
    DDMUnavailable,
    PublishFailed,
    RecoverableError,
    SiteNotServed,
    TransactionConflict,
)
from broker.settings import Settings, broker_nodes

log = logging.getLogger(__name__)


def what_is_down(exc: RecoverableError) -> str:
    """The outage an error means, in the words of the log line."""
    if isinstance(exc, TransactionConflict):
        return "a transaction kept losing conflicts with another process's"
    if isinstance(exc, DatabaseUnavailable):
        return "the database is unavailable"
    if isinstance(exc, PublishFailed):
        return "RabbitMQ did not take a publish"
    if isinstance(exc, SiteNotServed):
        return "no job queues for its site"
    if isinstance(exc, DDMUnavailable):
        return "the DDM (Rucio) is unavailable"
    return "RabbitMQ is unavailable"


#: AMQP reply codes with which RabbitMQ refuses to open a connection for good: 402
#: INVALID_PATH and 530 NOT_ALLOWED (no such vhost, or the user has no access to it).
REFUSED_VHOST_CODES = (402, 530)


def vhost_refusal(exc: RecoverableError, broker_url: str) -> BrokerRefused | None:
    """The permanent error an outage really is, if RabbitMQ refused the vhost; else None."""
    if getattr(exc.__cause__, "reply_code", None) not in REFUSED_VHOST_CODES:
        return None
    parts = urlsplit(broker_nodes(broker_url)[0])
    vhost = unquote(parts.path[1:]) or "/"
    user = parts.username or "USER"
    return BrokerRefused(
        f"RabbitMQ refused vhost {vhost!r} to user {user!r}: {exc.__cause__}; "
        f"create the vhost and let the user in: `rabbitmqctl add_vhost {vhost}` and "
        f"`rabbitmqctl set_permissions -p {vhost} {user} '.*' '.*' '.*'` "
        "(README.md, Running services and pilots)"
    )


class Backoff:
    """Counts consecutive failed attempts of one process and says when to try again."""

    def __init__(self, who: str, settings: Settings) -> None:
        self._who = who
        self._broker_url = settings.broker_url
        self._initial_s = settings.reconnect_initial_delay_s
        self._max_s = settings.reconnect_max_delay_s
        self._next_at = 0.0
        #: Failed attempts since the last success.
        self.failures = 0

    def delay_s(self, failures: int) -> float:
        """The wait after ``failures`` consecutive failures."""
        ceiling = min(self._max_s, self._initial_s * 2 ** min(failures - 1, 32))
        return random.uniform(ceiling / 2, ceiling)

    def failed(self, exc: RecoverableError) -> None:
        """Count a failed attempt, log it, and schedule the next one; raise the
        ``PermanentError`` it really is if waiting cannot fix it."""
        refusal = vhost_refusal(exc, self._broker_url)
        if refusal is not None:
            raise refusal from exc
        self.failures += 1
        delay = self.delay_s(self.failures)
        self._next_at = time.monotonic() + delay
        # Driver messages (psycopg's) span lines; the log gets one line per attempt.
        text = " ".join(str(exc).split())
        log.warning(
            "%s: %s: %s; retry %d in %.1f s",
            self._who,
            what_is_down(exc),
            text,
            self.failures,
            delay,
        )

    def succeeded(self) -> None:
        """Connected again: the next outage starts from the initial delay."""
        if self.failures:
            log.info("%s: back after %d failed attempt(s)", self._who, self.failures)
        self.failures = 0
        self._next_at = 0.0

    def due(self) -> bool:
        """Whether the next attempt may be made now."""
        return time.monotonic() >= self._next_at

    def wait(self, stop: threading.Event) -> bool:
        """Sleep until the next attempt is due; False if ``stop`` is set first."""
        return not stop.wait(max(0.0, self._next_at - time.monotonic()))


def until_stopped(session: Callable[[], None], backoff: Backoff, stop: threading.Event) -> None:
    """Run ``session`` until ``stop`` is set; after an outage, wait and run it again.

    ``session`` connects, serves, and returns when ``stop`` is set; it raises a
    ``RecoverableError`` when RabbitMQ or the database goes away, and calls
    ``backoff.succeeded()`` once it is connected. Other errors end the loop.
    """
    while not stop.is_set():
        try:
            session()
        except RecoverableError as exc:
            backoff.failed(exc)
            backoff.wait(stop)
