"""How many pilots to submit to a site: PanDA Harvester's rule of thumb, within limits.

Queued pilots are kept near the number of activated jobs and never above
it: each queued pilot will take one activated job when it starts. Three
limits per site bound the rest: pilots queued in the batch system, pilots
queued and running together, and submissions per cycle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from broker.settings import Settings
from broker.topology import RESOURCE_TYPES


@dataclass(frozen=True)
class Limits:
    """Per site: pilots queued at most, queued + running at most, submitted per cycle at most."""

    max_queued: int
    max_running: int
    max_submit: int

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        """The limits the settings give."""
        return cls(
            settings.factory_max_queued, settings.factory_max_running, settings.factory_max_submit
        )


def plan(
    activated: Mapping[str, int],
    queued: Mapping[str, int],
    running: Mapping[str, int],
    limits: Limits,
) -> dict[str, int]:
    """Pilots to submit per resource type (only those with some), largest types first."""
    queued_total = sum(queued.values())
    room = min(
        limits.max_queued - queued_total,
        limits.max_running - queued_total - sum(running.values()),
        limits.max_submit,
    )
    submit = {}
    for resource in RESOURCE_TYPES[::-1]:
        wanted = min(activated.get(resource, 0) - queued.get(resource, 0), room)
        if wanted > 0:
            submit[resource] = wanted
            room -= wanted
    return submit
