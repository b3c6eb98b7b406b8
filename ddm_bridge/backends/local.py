"""The local DDM: each site's SE is a directory, and a transfer agent copies files.

Copies run on a bounded pool of threads (``transfer_threads``). Each copy is
verified at the destination (size and adler32) and made again, from any
source replica, up to ``transfer_retries`` more times; a file that never
arrives right fails its subscription with the last reason. The catalogue is
pandamq's own SQL.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine

from broker.errors import BadInput
from broker.metrics import FILE_COPIES, FILE_COPY_DURATION
from broker.settings import Settings
from broker.store import datasets
from broker.store.clock import now
from broker.store.datasets import FileRecord
from broker.store.engine import transaction
from ddm_bridge.backend import Report
from ddm_bridge.se import Checksum, copy_verified, discard, keep_staged, mismatch, se_path

log = logging.getLogger(__name__)

Copy = Callable[[Path, Path, Checksum], None]


@dataclass
class _Transfer:
    """One subscription being served: files left, and whether it was given up."""

    dataset: str
    site: str
    left: int
    failed: bool = False
    cancelled: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class LocalDDM:
    """A DDM backend on local directories; see ``ddm_bridge.backend.DDMBackend``."""

    def __init__(self, settings: Settings, engine: Engine, copy: Copy = copy_verified) -> None:
        self._settings = settings
        self._engine = engine
        self._copy = copy
        self._pool = ThreadPoolExecutor(settings.transfer_threads, thread_name_prefix="transfer")
        self._reports: queue.Queue[Report] = queue.Queue()
        self._transfers: dict[tuple[str, str], _Transfer] = {}

    def subscribe(self, dataset: str, site: str) -> None:
        """Queue a copy of every file of ``dataset`` that ``site`` lacks."""
        key = (dataset, site)
        current = self._transfers.get(key)
        if current is not None and not current.cancelled:
            return
        with transaction(self._engine) as conn:
            wanted = datasets.sources(conn, dataset)
        transfer = _Transfer(dataset, site, len(wanted))
        self._transfers[key] = transfer
        self._reports.put(Report(dataset, site, "transferring"))
        if not wanted:
            self._finish(transfer)
        for record, replicas in wanted:
            self._pool.submit(self._move, transfer, record, replicas)

    def cancel(self, dataset: str, site: str) -> None:
        """Skip the files of this subscription not copied yet."""
        transfer = self._transfers.pop((dataset, site), None)
        if transfer is not None:
            transfer.cancelled = True

    def reports(self) -> list[Report]:
        """Everything reported since the last call."""
        taken = []
        while True:
            try:
                taken.append(self._reports.get_nowait())
            except queue.Empty:
                return taken

    def register(
        self, dataset: str, site: str, placed: Sequence[tuple[FileRecord, Path]], kind: str
    ) -> int:
        """Check each file on the SE against its size and adler32, then catalogue it."""
        for record, path in placed:
            problem = mismatch(path, Checksum(record.size, record.adler32))
            if problem is not None:
                raise BadInput(f"cannot register {record.did}: {problem}")
        with transaction(self._engine) as conn:
            return datasets.register(
                conn, dataset, [(r, str(p)) for r, p in placed], site, now(), kind=kind
            )

    def add_outputs(
        self, site: str, job_id: str, attempt: int, files: Sequence[tuple[str, FileRecord]]
    ) -> dict[str, str]:
        """Move the attempt's staged files to ``<SE>/<scope>/<name>``; the path of each.
        (The catalogue is pandamq's SQL, which the bridge writes.)"""
        records = [record for _, record in files]
        return keep_staged(self._settings.ddm_root, site, job_id, attempt, records)

    def discard_outputs(self, site: str, job_id: str, attempt: int) -> None:
        """Remove the attempt's staging directory."""
        discard(self._settings.ddm_root, site, job_id, attempt)

    def close(self, dataset: str) -> None:
        """Close the dataset in the catalogue."""
        with transaction(self._engine) as conn:
            datasets.close(conn, dataset, now())

    def stop(self) -> None:
        """Drop queued copies and wait for the running ones."""
        for transfer in self._transfers.values():
            transfer.cancelled = True
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _move(self, transfer: _Transfer, record: FileRecord, replicas: dict[str, str]) -> None:
        """Bring one file to the transfer's site, retrying; report how it went."""
        if transfer.cancelled or transfer.failed:
            return
        if transfer.site in replicas:
            self._placed(transfer, record, Path(replicas[transfer.site]), 0)
            return
        destination = se_path(self._settings.ddm_root, transfer.site, record.scope, record.name)
        expected = Checksum(record.size, record.adler32)
        sources = [Path(p) for s, p in sorted(replicas.items()) if s != transfer.site]
        error = "no replica at any other site" if not sources else ""
        for attempt in range(self._settings.transfer_retries + 1 if sources else 0):
            error = self._try(sources[attempt % len(sources)], destination, expected)
            if not error:
                self._placed(transfer, record, destination, attempt)
                return
            log.warning(
                "copy %d of %s to %s failed: %s", attempt + 1, record.did, transfer.site, error
            )
        self._failed(transfer, f"{record.did}: {error}")

    def _try(self, source: Path, destination: Path, expected: Checksum) -> str:
        """One copy; the reason it failed, or ``""``."""
        if self._settings.transfer_delay_s:
            time.sleep(self._settings.transfer_delay_s)  # the simulated wide-area latency
        started = time.monotonic()
        try:
            self._copy(source, destination, expected)
        except (OSError, ValueError) as exc:
            _copied("failed", started)
            return str(exc)
        _copied("verified", started)
        return ""

    def _placed(self, transfer: _Transfer, record: FileRecord, path: Path, retries: int) -> None:
        with transfer.lock:
            if transfer.cancelled or transfer.failed:
                return
            transfer.left -= 1
            self._reports.put(
                Report(
                    transfer.dataset,
                    transfer.site,
                    "transferring",
                    placed=[(record.did, str(path))],
                    retries=retries,
                )
            )
            if transfer.left == 0:
                self._finish(transfer)

    def _finish(self, transfer: _Transfer) -> None:
        self._reports.put(Report(transfer.dataset, transfer.site, "done"))
        self._transfers.pop((transfer.dataset, transfer.site), None)

    def _failed(self, transfer: _Transfer, error: str) -> None:
        with transfer.lock:
            if transfer.cancelled or transfer.failed:
                return
            transfer.failed = True
        retries = self._settings.transfer_retries
        self._reports.put(
            Report(transfer.dataset, transfer.site, "failed", error=error, retries=retries)
        )
        self._transfers.pop((transfer.dataset, transfer.site), None)


def _copied(result: str, started: float) -> None:
    """Count one copy and how long it took."""
    FILE_COPIES.labels(result=result).inc()
    FILE_COPY_DURATION.labels(result=result).observe(time.monotonic() - started)
