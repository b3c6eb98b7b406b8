"""A job's payload log, read back from the SE: the log tarball the pilot stored
at stage-out, found through its registered replica (role ``log`` in
``job_files``). ``pandamq job ID --log`` and the web monitor's job page read it.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from typing import IO, Any

from sqlalchemy import Connection, select

from broker.errors import NotFound, PermanentError
from broker.protocol import LOG_FILES
from broker.store.schema import files, job_files, jobs, replicas

#: Lines of each log file the monitor's job page shows.
TAIL_LINES = 100
#: Bytes read from the end of each log file for a tail, so a huge log costs little memory.
TAIL_BYTES = 64 * 1024


class LogUnreadable(PermanentError):
    """A job's log tarball is registered but missing from the SE or not a readable tarball."""


@dataclass(frozen=True)
class StoredLog:
    """Where an attempt's log tarball is: the site and path of its replica."""

    job_id: str
    attempt: int
    site: str
    path: str


def stored_log(conn: Connection, job_id: str, attempt: int | None = None) -> StoredLog:
    """The replica of the log of ``attempt`` (default: the latest attempt that stored one)."""
    stmt = (
        select(job_files.c.attempt, replicas.c.site, replicas.c.path)
        .join(files, files.c.id == job_files.c.file_id)
        .join(replicas, replicas.c.file_id == files.c.id)
        .where(job_files.c.job_id == job_id, job_files.c.role == "log")
        .order_by(job_files.c.attempt.desc(), replicas.c.site)
        .limit(1)
    )
    if attempt is not None:
        stmt = stmt.where(job_files.c.attempt == attempt)
    row = conn.execute(stmt).first()
    if row is None:
        raise NotFound(_no_log(conn, job_id, attempt))
    return StoredLog(job_id, row.attempt, row.site, row.path)


def _no_log(conn: Connection, job_id: str, attempt: int | None) -> str:
    state = conn.execute(select(jobs.c.state).where(jobs.c.id == job_id)).scalar()
    if state is None:
        return f"no job {job_id!r}"
    if attempt is not None:
        return f"job {job_id} has no stored log for attempt {attempt} (it is {state})"
    return f"job {job_id} has no stored log yet (it is {state})"


def read_log(log: StoredLog, tail_bytes: int | None = None) -> dict[str, str]:
    """The payload's stdout and stderr in the tarball (the last ``tail_bytes`` of each)."""
    where = f"log of job {log.job_id} attempt {log.attempt} ({log.site}:{log.path})"
    try:
        with tarfile.open(log.path, "r:gz") as tar:
            return {name: _read(tar, name, tail_bytes) for name in LOG_FILES if _has(tar, name)}
    except FileNotFoundError as exc:
        raise LogUnreadable(f"{where} is missing from the SE") from exc
    except (OSError, EOFError, tarfile.TarError) as exc:
        raise LogUnreadable(f"{where} cannot be read: {exc}") from exc


def _has(tar: tarfile.TarFile, name: str) -> bool:
    try:
        return tar.getmember(name).isfile()
    except KeyError:
        return False


def _read(tar: tarfile.TarFile, name: str, tail_bytes: int | None) -> str:
    member = tar.getmember(name)
    stream: IO[bytes] | None = tar.extractfile(member)
    if stream is None:
        return ""
    cut = tail_bytes is not None and member.size > tail_bytes
    if cut:
        stream.seek(member.size - (tail_bytes or 0))
    text = stream.read().decode("utf-8", errors="replace")
    # A read from the middle starts inside a line: show whole lines only.
    return text.partition("\n")[2] if cut else text


def tail(text: str, lines: int) -> str:
    """The last ``lines`` lines of ``text``."""
    return "\n".join(text.splitlines()[-lines:])


def log_tail(conn: Connection, job_id: str, lines: int = TAIL_LINES) -> dict[str, Any]:
    """The tail of each file of a job's latest log, or why there is none (for the monitor)."""
    try:
        log = stored_log(conn, job_id)
        members = read_log(log, TAIL_BYTES)
    except (NotFound, LogUnreadable) as exc:
        return {"error": str(exc)}
    return {
        "attempt": log.attempt,
        "site": log.site,
        "path": log.path,
        "files": {name: tail(text, lines) for name, text in members.items()},
    }
