"""Rucio's own daemons for the test server, with a local copier standing in for FTS.

Run with the Rucio server's Python (``.venv-rucio``), not pandamq's:
``python tests/rucio_daemons.py``, ``RUCIO_CONFIG`` naming the server's config.
Each pass calls, once each, Rucio's conveyor submitter, poller and finisher
and its judge evaluator, repairer and cleaner: the real code that turns a replication
rule into transfer requests, picks a source replica, submits the transfer,
polls it, marks the replica available and the rule's locks OK (or, after
Rucio's retries, the rule STUCK), and removes expired rules.

What Rucio would hand to FTS is handed to ``PosixCopy``, a transfertool of
this file: it copies the source replica's ``file://`` URL to the destination
URL Rucio chose, verifies size and adler32 against what Rucio holds, and
reports the transfer done, or failed with the reason, when the poller asks.
FTS itself cannot run here (it is no PyPI package, and needs a database and
gfal2 of its own); this class is the only part of the transfer path that is
not Rucio's.
"""

from __future__ import annotations

import logging
import shutil
import signal
import sys
import threading
import uuid
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rucio.core import transfer as transfer_core
from rucio.daemons.conveyor import finisher as finisher_module
from rucio.daemons.conveyor import poller as poller_module
from rucio.daemons.conveyor import submitter as submitter_module
from rucio.daemons.conveyor.finisher import finisher
from rucio.daemons.conveyor.poller import poller
from rucio.daemons.conveyor.submitter import submitter
from rucio.daemons.judge.cleaner import rule_cleaner
from rucio.daemons.judge.evaluator import re_evaluator
from rucio.daemons.judge.repairer import rule_repairer
from rucio.db.sqla.constants import RequestState
from rucio.transfertool.mock import MockTransfertool
from rucio.transfertool.transfertool import TransferStatusReport

NAME = "posix-copy"
#: How long the driver sleeps between two passes.
PASS_S = 0.5
#: (external id → request id → (state, reason)): what each submitted job did.
RESULTS: dict[str, dict[str, tuple[Any, str | None]]] = {}
STOP = threading.Event()


class CopyReport(TransferStatusReport):
    """A transfer's end, as the poller records it."""

    supported_db_fields = ["state", "external_id", "err_msg"]  # noqa: RUF012 (Rucio's own)

    def __init__(self, request_id: str, external_id: str, state: Any, reason: str | None) -> None:
        super().__init__(request_id)
        self.state = state
        self.external_id = external_id
        self.err_msg = reason

    def initialize(self, session: Any, logger: Any = logging.log) -> None:
        """Nothing to fetch: the copy was made at submission."""

    def get_monitor_msg_fields(self, session: Any, logger: Any = logging.log) -> dict[str, Any]:
        """The reason, for Rucio's messages."""
        return {"reason": self.err_msg}


class PosixCopy(MockTransfertool):  # type: ignore[misc]
    """Copies ``file://`` replicas between posix RSEs on this machine, verified."""

    external_name = NAME
    supported_schemes = frozenset({"file"})

    def submit(self, transfers: Any, job_params: Any, timeout: float | None = None) -> str:
        """Copy every file of the job now; the job's id."""
        external_id = str(uuid.uuid4())
        RESULTS[external_id] = {t.rws.request_id: _copy(t) for t in transfers}
        return external_id

    def bulk_query(self, requests_by_eid: Any, timeout: float | None = None) -> Any:
        """What each copy did."""
        response: dict[str, dict[str, CopyReport]] = {}
        for external_id, requests in requests_by_eid.items():
            done = RESULTS.get(external_id, {})
            for request_id in requests:
                state, reason = done.get(request_id, (RequestState.LOST, "unknown transfer"))
                response.setdefault(external_id, {})[request_id] = CopyReport(
                    request_id, external_id, state, reason
                )
        return response


def _copy(transfer: Any) -> tuple[Any, str | None]:
    """One verified copy of a transfer's first source to its destination."""
    source = Path(urlsplit(transfer.source_url(transfer.src)).path)
    destination = Path(urlsplit(transfer.dest_url).path)
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        partial = destination.with_name(f".{destination.name}.part")
        shutil.copyfile(source, partial)
        problem = _mismatch(partial, transfer.rws.byte_count, transfer.rws.adler32)
        if problem:
            partial.unlink()
            return RequestState.FAILED, f"{transfer.rws}: {problem}"
        partial.replace(destination)
    except OSError as exc:
        return RequestState.FAILED, f"copy {source} to {destination}: {exc}"
    return RequestState.DONE, None


def _mismatch(path: Path, size: int, adler32: str | None) -> str | None:
    value = zlib.adler32(path.read_bytes())
    if path.stat().st_size != size:
        return f"size {path.stat().st_size}, expected {size}"
    if adler32 and f"{value:08x}" != adler32.lower().zfill(8):
        return f"adler32 {value:08x}, expected {adler32}"
    return None


def one_pass() -> None:
    """Each daemon once."""
    submitter(once=True, partition_wait_time=0, transfertools=[NAME], transfertype="single")
    poller(once=True, partition_wait_time=0, older_than=0, transfertool=NAME)
    finisher(once=True, partition_wait_time=0)
    re_evaluator(once=True, sleep_time=0)
    rule_repairer(once=True, sleep_time=0)
    rule_cleaner(once=True, sleep_time=0)


def main() -> None:
    """Run passes until SIGTERM or SIGINT."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    transfer_core.TRANSFERTOOL_CLASSES_BY_NAME[NAME] = PosixCopy
    print("rucio daemons running", flush=True)
    while not _stopping():
        one_pass()
        # (the daemons put in signal handlers of their own while they run)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: STOP.set())
        STOP.wait(PASS_S)


def _stopping() -> bool:
    """Asked to stop: by a signal to this driver, or to a daemon while it ran."""
    modules = (submitter_module, poller_module, finisher_module)
    return STOP.is_set() or any(m.GRACEFUL_STOP.is_set() for m in modules)


if __name__ == "__main__":
    main()
