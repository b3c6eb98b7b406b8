"""The small interface every batch system is used through, and the pilot's command line."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from broker.settings import ENV_PREFIX, PILOT_FIELDS, Settings


class PilotState(StrEnum):
    """Where a pilot stands in its batch system (Harvester's worker states)."""

    SUBMITTED = "submitted"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: The batch system has forgotten the pilot before the factory saw it end.
    MISSED = "missed"


LIVE_STATES = frozenset({PilotState.SUBMITTED, PilotState.RUNNING})


@dataclass(frozen=True)
class SlotShape:
    """What a pilot asks its batch system for."""

    site: str
    resource_type: str
    cores: int
    memory_mb: int
    walltime_s: int


@dataclass(frozen=True)
class BatchStatus:
    """A pilot's state as its batch system reports it, and its exit code once it ended."""

    state: PilotState
    exit_code: int | None = None


class Submitter(Protocol):
    """A batch system: submit pilots of a slot shape, poll their states, cancel them."""

    #: Name in ``factory_batch_system`` and in the ``pilots.batch_system`` column.
    name: str

    def submit(self, shape: SlotShape, pilot_ids: Sequence[str]) -> list[str]:
        """Submit one pilot per id; their batch ids, in the same order."""
        ...

    def poll(self, batch_ids: Sequence[str]) -> dict[str, BatchStatus]:
        """The state of each pilot the batch system still knows; the missing are forgotten."""
        ...

    def cancel(self, batch_ids: Sequence[str]) -> None:
        """Cancel pilots, queued or running."""
        ...


def pilot_environment(settings: Settings) -> dict[str, str]:
    """``PANDAMQ_*`` variables that give a pilot the factory's settings (``PILOT_FIELDS``)."""
    values = {name: getattr(settings, name) for name in sorted(PILOT_FIELDS)}
    return {f"{ENV_PREFIX}{k.upper()}": str(v) for k, v in values.items() if v is not None}


def inherited_environment() -> dict[str, str]:
    """The factory's environment without its ``PANDAMQ_*`` settings, for a batch command.

    The database URL (a password, maybe) must not reach worker nodes: a pilot
    gets only ``pilot_environment``.
    """
    return {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}


def pilot_command(settings: Settings, shape: SlotShape, pilot_id: str) -> list[str]:
    """The command line that starts one pilot: the bundle if there is one, else this install's."""
    if settings.factory_pilot_bundle:
        start = ["python3", settings.factory_pilot_bundle]
    else:
        start = [sys.executable, "-m", "pilot_agent"]
    arguments = [
        f"--site={shape.site}",
        f"--cores={shape.cores}",
        f"--memory={shape.memory_mb}",
        f"--pilot-id={pilot_id}",
        f"--max-idle={settings.factory_pilot_idle_s:g}",
    ]
    if settings.factory_pilot_max_jobs:
        arguments.append(f"--max-jobs={settings.factory_pilot_max_jobs}")
    return start + arguments
