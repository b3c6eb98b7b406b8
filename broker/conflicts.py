"""Running again, in place, work whose transaction lost a conflict with another one.

PostgreSQL ends one of two transactions that deadlock, or that it cannot
serialise, and rolls it back (``TransactionConflict``): nothing of it was
applied, and the database is up, so the same work is done again at once,
not waited out as an outage. Batch handlers are run through it by the
consumer, and the services' periodic passes by their loops.
This module imports no SQL code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from broker.errors import TransactionConflict

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How many times work is tried before its conflict goes up (as a recoverable error).
ATTEMPTS = 5


def retried(work: Callable[[], T], what: str, attempts: int = ATTEMPTS) -> T:
    """``work()``, run again while its transaction loses a conflict; after ``attempts``
    tries the last ``TransactionConflict`` goes up."""
    for attempt in range(1, attempts):
        try:
            return work()
        except TransactionConflict as exc:
            # One line: psycopg's message spans several.
            text = " ".join(str(exc).split())
            log.info("%s: %s; running it again (try %d of %d)", what, text, attempt + 1, attempts)
    return work()
