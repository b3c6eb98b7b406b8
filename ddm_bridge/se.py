"""Storage elements of the local DDM: one directory per site, files at ``<scope>/<name>``.

A pilot stages an attempt's outputs and log into the attempt's own staging
directory, ``<SE>/.staging/<job id>.<attempt>/``; the DDM bridge's local
backend moves them to ``<scope>/<name>`` when it keeps them (``accept``), and
removes the staging directory of an attempt it did not keep (``discard``). A
scope never starts with a dot, so no DID lives under ``.staging``.

Standard library and the wire protocol only: the pilot stages files in and out
with these too.
"""

from __future__ import annotations

import shutil
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

from broker import protocol

READ_CHUNK = 1024 * 1024
#: What a job's log tarball holds (``broker.protocol``), named with the SE's layout
#: for the pilot's staging.
LOG_FILES = protocol.LOG_FILES
#: The directory of an SE where attempts stage their files.
STAGING = ".staging"


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


def discard(root: str, site: str, job_id: str, attempt: int) -> None:
    """Remove what an attempt staged and the service did not accept."""
    shutil.rmtree(staging_dir(root, site, job_id, attempt), ignore_errors=True)


def log_name(job_id: str, attempt: int) -> str:
    """The file name of an attempt's log tarball."""
    return f"{job_id}.{attempt}.log.tgz"
