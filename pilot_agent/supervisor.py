"""Watch a running payload: heartbeats, kill commands, the pilot's own stop,
and the job's memory limit; say how the payload ended."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from broker.error_codes import PilotError
from broker.protocol import EventKind, JobSpec
from pilot_agent.payload import Payload

#: How long one wait for the payload lasts before the supervisor looks around.
WAIT_S = 0.2


@dataclass(frozen=True)
class Outcome:
    """How a payload ended, as the pilot reports it."""

    kind: EventKind
    exit_code: int | None
    error_code: PilotError | None = None
    diagnostic: str = ""


@dataclass
class Supervisor:
    """Runs the loop around one payload. ``kill_reason`` returns why to kill it, if asked."""

    payload: Payload
    spec: JobSpec
    heartbeat_interval_s: float
    kill_grace_s: float
    heartbeat: Callable[[], None]
    kill_reason: Callable[[], str | None]
    stop: threading.Event
    #: How often the payload's memory is measured (the ``memory_check_s`` setting).
    memory_check_s: float = 1.0

    def run(self) -> Outcome:
        """Wait for the payload to end, or end it; the outcome."""
        next_beat = time.monotonic() + self.heartbeat_interval_s
        next_memory = time.monotonic()
        while True:
            code = self.payload.wait(WAIT_S)
            if code is not None:
                return self._exited(code)
            interrupted = self._interrupted(time.monotonic() >= next_memory)
            if interrupted is not None:
                return interrupted
            if time.monotonic() >= next_memory:
                next_memory = time.monotonic() + self.memory_check_s
            if time.monotonic() >= next_beat:
                self.heartbeat()
                next_beat = time.monotonic() + self.heartbeat_interval_s

    def _exited(self, code: int) -> Outcome:
        if code == 0:
            return Outcome("finished", 0)
        return Outcome("failed", code, PilotError.PAYLOAD_FAILED, self.payload.stderr_tail())

    def _interrupted(self, check_memory: bool) -> Outcome | None:
        """End the payload if the pilot stops, a kill came, or it uses too much memory."""
        if self.stop.is_set():
            return self._end("failed", PilotError.PILOT_STOPPED, "pilot stopped")
        reason = self.kill_reason()
        if reason is not None:
            return self._end("cancelled", PilotError.KILLED, reason or "killed on request")
        if check_memory:
            used = self.payload.rss_mb()
            if used > self.spec.memory_mb:
                text = f"payload used {used} MB, more than the {self.spec.memory_mb} MB asked for"
                return self._end("failed", PilotError.OUT_OF_MEMORY, text)
        return None

    def _end(self, kind: EventKind, error: PilotError, diagnostic: str) -> Outcome:
        code = self.payload.stop(self.kill_grace_s)
        return Outcome(kind, code, error, diagnostic)
