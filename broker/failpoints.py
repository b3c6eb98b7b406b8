"""Fault injection for crash tests: a named point where the process can be made to die.

``PANDAMQ_FAILPOINT=after-commit:pandamq.events`` makes the broker kill itself
with SIGKILL right after it commits a batch from that queue and before it
acks it, which is the window the delivery guarantees are about.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

_ARMED = os.environ.get("PANDAMQ_FAILPOINT", "")


def hit(name: str) -> None:
    """Die here with SIGKILL when this failpoint is armed."""
    if _ARMED and name == _ARMED:
        log.critical("failpoint %s: killing this process with SIGKILL", name)
        os.kill(os.getpid(), signal.SIGKILL)
