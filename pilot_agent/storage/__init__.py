"""How a pilot reaches its site's storage: a small interface, one module per kind.

A storage stages an attempt's inputs into its work directory (from the
replicas the claim reply names) and stages out its declared outputs and
its log tarball to the site's storage, describing each stored file for the
job's final event. ``local`` is the site's SE as a directory (the local DDM's,
or a Rucio RSE mounted on the worker nodes); ``rucio`` goes through Rucio's
download and upload clients (docs/ddm.md). The setting ``pilot_storage`` picks
one; its module is imported only when a pilot opens it, so a worker node
without ``rucio-clients`` runs the local one.

Standard library only, with the protocol: the pilot imports no SQL code.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from broker.error_codes import PilotError
from broker.errors import ConfigError, PandaMQError
from broker.protocol import FileInfo, JobSpec

if TYPE_CHECKING:
    from broker.settings import Settings

#: ``pilot_storage`` value → ``module:function`` that opens it for (settings, site).
STORAGES: dict[str, str] = {
    "local": "pilot_agent.storage.local:open_local",
    "rucio": "pilot_agent.storage.rucio:open_rucio",
}


class StagingError(PandaMQError):
    """A file could not be staged in or out; ``code`` is the pilot error to report."""

    def __init__(self, code: PilotError, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class StageOut:
    """What stage-out stored, and why an output could not be stored (if one could not)."""

    files: list[FileInfo] = field(default_factory=list)
    problem: str = ""


@dataclass(frozen=True)
class Attempt:
    """The attempt whose files are staged out, and the scope they are registered in."""

    spec: JobSpec
    number: int
    scope: str


class Storage(Protocol):
    """What the pilot needs of its site's storage."""

    def stage_in(self, inputs: Sequence[FileInfo], work_dir: Path) -> None:
        """Bring each input into ``work_dir``, verified; ``StagingError`` if one fails."""

    def stage_out(self, attempt: Attempt, work_dir: Path, with_outputs: bool) -> StageOut:
        """Store the log tarball and, ``with_outputs``, every declared output."""


def open_storage(settings: Settings, site: str) -> Storage:
    """The storage ``pilot_storage`` names, for ``site``."""
    module_name, _, function = STORAGES[settings.pilot_storage].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"pilot_storage {settings.pilot_storage!r} cannot be loaded ({exc}): "
            "install pandamq[rucio] (pip install 'pandamq[rucio]')"
        ) from exc
    storage: Storage = getattr(module, function)(settings, site)
    return storage
