"""Storage elements of the local DDM: one directory per site, files at ``<scope>/<name>``.

A pilot stages an attempt's outputs and log into the attempt's own staging
directory, ``<SE>/.staging/<job id>.<attempt>/``; the DDM bridge's local
backend moves them to ``<scope>/<name>`` when it keeps them (``accept``), and
removes the staging directory of an attempt it did not keep (``discard``). A
scope never starts with a dot, so no DID lives under ``.staging``.

Standard library and the error tree only: the pilot stages files in and out
with these too.
"""

from __future__ import annotations

import shutil
import uuid
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from broker.errors import BadInput

READ_CHUNK = 1024 * 1024
#: The directory of an SE where attempts stage their files.
STAGING = ".staging"


class FileRecordLike(Protocol):
    """What ``keep_staged`` reads of a file record (``broker.store.datasets.FileRecord``)."""

    @property
    def scope(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def adler32(self) -> str: ...


def se_dir(root: str, site: str) -> Path:
    """The storage element of ``site``."""
    return Path(root) / site


def se_path(root: str, site: str, scope: str, name: str) -> Path:
    """Where the file ``scope:name`` lives on ``site``'s storage element."""
    return se_dir(root, site) / scope / name


@dataclass(frozen=True)
class Checksum:
    """What a copy must match: size in bytes and adler32 as 8 hex digits."""

    size: int
    adler32: str


def checksum(path: Path) -> Checksum:
    """Size and adler32 of a file (``OSError`` if it cannot be read)."""
    value = 1
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(READ_CHUNK):
            value = zlib.adler32(chunk, value)
            size += len(chunk)
    return Checksum(size, f"{value:08x}")


def mismatch(path: Path, expected: Checksum) -> str | None:
    """Why ``path`` does not match ``expected``, or None when it does."""
    try:
        found = checksum(path)
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    if found.size != expected.size:
        return f"{path}: size {found.size}, expected {expected.size}"
    if found.adler32 != expected.adler32:
        return f"{path}: adler32 {found.adler32}, expected {expected.adler32}"
    return None


def copy_verified(source: Path, destination: Path, expected: Checksum) -> None:
    """Copy ``source`` to ``destination`` and verify it there.

    The copy is written under a temporary name and renamed only once it
    matches, so ``destination`` is either absent or right. Raises ``OSError``
    for I/O failures and ``ValueError`` for a copy that does not match.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        shutil.copyfile(source, partial)
        problem = mismatch(partial, expected)
        if problem is not None:
            raise ValueError(problem.replace(str(partial), str(destination)))
        partial.replace(destination)
    finally:
        partial.unlink(missing_ok=True)


def staging_dir(root: str, site: str, job_id: str, attempt: int) -> Path:
    """Where one attempt stages its files on ``site``'s SE until they are accepted."""
    return se_dir(root, site) / STAGING / f"{job_id}.{attempt}"


def accept(staged: Path, destination: Path, expected: Checksum) -> str | None:
    """Move a staged file to its place on the SE; why it cannot be, or None.

    A file accepted before (by a transaction that is being run again) is
    already in its place: that is no refusal.
    """
    if staged.is_file():
        destination.parent.mkdir(parents=True, exist_ok=True)
        staged.replace(destination)
        return None
    if destination.is_file() and mismatch(destination, expected) is None:
        return None
    return f"{staged.name} was not staged on the SE ({staged.parent} has no such file)"


def keep_staged(
    root: str,
    site: str,
    job_id: str,
    attempt: int,
    records: Sequence[FileRecordLike],
    place: Callable[[FileRecordLike], Path] | None = None,
) -> dict[str, str]:
    """Move what attempt ``attempt`` of ``job_id`` staged at ``site`` to each file's place
    (``place``; by default ``<SE>/<scope>/<name>``), each checked against its size and
    adler32 first, then remove the staging directory; each file's path by DID.

    ``BadInput`` names a file that was not staged, does not match its size and adler32,
    or whose place holds another file. Doing it again for files kept already is harmless.
    """
    staged = staging_dir(root, site, job_id, attempt)
    kept: dict[str, str] = {}
    for record in records:
        did = f"{record.scope}:{record.name}"
        destination = place(record) if place else se_path(root, site, record.scope, record.name)
        expected = Checksum(record.size, record.adler32)
        source = staged / record.name
        problem = (
            _other_file(destination, expected)
            or (mismatch(source, expected) if source.is_file() else None)
            or accept(source, destination, expected)
        )
        if problem is not None:
            raise BadInput(f"{did} not accepted: {problem}")
        kept[did] = str(destination)
    discard(root, site, job_id, attempt)
    return kept


def _other_file(destination: Path, expected: Checksum) -> str | None:
    """Why a staged file may not replace what ``destination`` holds: another file."""
    if destination.is_file() and mismatch(destination, expected) is not None:
        return f"{destination} holds another file of that name"
    return None


def discard(root: str, site: str, job_id: str, attempt: int) -> None:
    """Remove what an attempt staged and the service did not accept."""
    shutil.rmtree(staging_dir(root, site, job_id, attempt), ignore_errors=True)


def log_name(job_id: str, attempt: int) -> str:
    """The file name of an attempt's log tarball."""
    return f"{job_id}.{attempt}.log.tgz"
