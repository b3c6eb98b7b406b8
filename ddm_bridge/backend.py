"""The interface to a data-management system (DDM), so another one (Rucio) can plug in.

The bridge asks a backend to bring a dataset to a site (``subscribe``), and
collects what the backend reports: files placed, then the subscription done
or failed (``reports``). The catalogue side registers files with replicas
into a dataset and closes datasets. As PanDA's Adder, the bridge takes the
files a job wrote at its site into their datasets (``add_outputs``), or has
what an attempt staged removed (``discard_outputs``). docs/ddm.md maps each
call onto Rucio.
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

    def add_outputs(
        self, site: str, job_id: str, attempt: int, files: Sequence[tuple[str, FileRecord]]
    ) -> dict[str, str]:
        """Keep the files that attempt ``attempt`` of ``job_id`` stored at ``site`` as
        replicas there, each going into its dataset (``files``: (dataset, file) pairs);
        the replica's path (or URL) by DID, for pandamq's catalogue.

        Raises ``BadInput`` naming a file that was not stored, does not match its size
        and adler32, or whose name holds another file at ``site``. Doing it again for
        files kept already is harmless: a bridge that died before it recorded them
        does it again.
        """

    def discard_outputs(self, site: str, job_id: str, attempt: int) -> None:
        """Remove what attempt ``attempt`` of ``job_id`` stored at ``site`` and was not
        kept (its files were refused, or the attempt is over); harmless when nothing is
        left."""

    def close(self, dataset: str) -> None:
        """Close a dataset: no file can be added any more."""

    def stop(self) -> None:
        """Release threads and connections."""
