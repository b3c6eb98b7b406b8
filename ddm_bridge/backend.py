"""The interface to a data-management system (DDM), so another one (Rucio) can plug in.

The bridge asks a backend to bring a dataset to a site (``subscribe``), and
collects what the backend reports: files placed, then the subscription done
or failed (``reports``). The catalogue side registers files with replicas
into a dataset and closes datasets. docs/ddm.md maps each call onto Rucio.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from broker.store.datasets import FileRecord

ReportState = Literal["transferring", "done", "failed"]


@dataclass(frozen=True)
class Report:
    """What a backend has to say about one subscription (dataset → site)."""

    dataset: str
    site: str
    state: ReportState
    #: (DID, path on the site's SE) of each file that reached the site since the last report
    placed: list[tuple[str, str]] = field(default_factory=list)
    error: str | None = None
    #: transfer attempts that failed and were made again
    retries: int = 0


class DDMBackend(Protocol):
    """What the bridge needs of a DDM."""

    def subscribe(self, dataset: str, site: str) -> None:
        """Ask for every file of ``dataset`` at ``site``; repeating it is harmless."""

    def cancel(self, dataset: str, site: str) -> None:
        """Stop working on a subscription the bridge gave up on."""

    def reports(self) -> list[Report]:
        """Progress and completions since the last call, without waiting."""

    def register(
        self, dataset: str, site: str, placed: Sequence[tuple[FileRecord, Path]], kind: str
    ) -> int:
        """Put files already on ``site``'s SE into ``dataset``; how many were new to it."""

    def close(self, dataset: str) -> None:
        """Close a dataset: no file can be added any more."""

    def stop(self) -> None:
        """Release threads and connections."""
