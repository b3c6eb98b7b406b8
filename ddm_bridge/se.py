"""Storage elements of the local DDM: one directory per site, files at ``<scope>/<name>``.

Standard library only: the pilot stages files in and out with these too.
"""

from __future__ import annotations

import shutil
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

READ_CHUNK = 1024 * 1024


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


def output_scope(task_id: str | None) -> str:
    """The scope of a job's outputs and log: its task, or ``user`` for a job of no task."""
    return task_id or "user"


def log_name(job_id: str, attempt: int) -> str:
    """The file name of an attempt's log tarball."""
    return f"{job_id}.{attempt}.log.tgz"
