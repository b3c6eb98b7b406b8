"""Error codes recorded on failed job attempts, grouped by family as in PanDA.

Standard library only: the pilot imports this module.
"""

from __future__ import annotations

from enum import IntEnum


class PilotError(IntEnum):
    """Failures the pilot reports (PanDA's pilot error family)."""

    PAYLOAD_FAILED = 1305
    PAYLOAD_NOT_STARTED = 1306
    PILOT_STOPPED = 1307


DESCRIPTIONS: dict[int, str] = {
    PilotError.PAYLOAD_FAILED: "payload exited with a non-zero code",
    PilotError.PAYLOAD_NOT_STARTED: "the pilot could not start the payload",
    PilotError.PILOT_STOPPED: "the pilot was stopped while the payload ran",
}
