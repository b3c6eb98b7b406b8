"""What a pilot's final event makes of its attempt: the final state, the columns it
sets, and the failure that retries decide on. The event handler applies it to a job
that reported no files; the DDM bridge, once it has registered a holding job's files.
"""

from __future__ import annotations

from typing import Any

from broker.error_codes import ErrorFamily
from broker.operations.retries import Failure
from broker.protocol import JobEvent
from broker.states import JobState

#: The final state each final event kind reports.
FINAL: dict[str, JobState] = {
    "finished": JobState.FINISHED,
    "failed": JobState.FAILED,
    "cancelled": JobState.CANCELLED,
}


def failure(event: JobEvent) -> Failure:
    """Why the attempt failed, as its pilot says."""
    family = ErrorFamily.PILOT.value if event.error_code is not None else None
    return Failure(family, event.error_code, event.exit_code, event.diagnostic or None)


def final_values(event: JobEvent) -> dict[str, Any]:
    """The columns a final event sets on its job and attempt."""
    return {
        "exit_code": event.exit_code,
        "error_family": failure(event).family,
        "error_code": event.error_code,
        "diagnostic": event.diagnostic or None,
    }
