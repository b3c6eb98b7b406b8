"""Stage-in and stage-out on the site's storage element (local DDM).

Stage-in copies each input from the SE into the job's work directory and
verifies its size and adler32. Stage-out stores the declared outputs (when
the payload succeeded) and a log tarball in the attempt's own staging
directory on the SE, and describes each with its size and adler32 for the
job's final event. The broker service moves them to their place when it
accepts them: an attempt never writes where another attempt's files are.
"""

from __future__ import annotations

import io
import tarfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from broker.error_codes import PilotError
from broker.errors import PandaMQError
from broker.protocol import FileInfo, JobSpec
from ddm_bridge.se import (
    LOG_FILES,
    Checksum,
    checksum,
    copy_verified,
    log_name,
    se_path,
    staging_dir,
)


class StagingError(PandaMQError):
    """A file could not be staged in or out; ``code`` is the pilot error to report."""

    def __init__(self, code: PilotError, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class StorageElement:
    """The SE of the pilot's site under the local DDM's root."""

    root: str
    site: str

    def path(self, scope: str, name: str) -> Path:
        """Where ``scope:name`` lives on this SE."""
        return se_path(self.root, self.site, scope, name)

    def staging(self, job_id: str, attempt: int) -> Path:
        """Where one attempt stages its files on this SE."""
        return staging_dir(self.root, self.site, job_id, attempt)


def stage_in(se: StorageElement, inputs: Sequence[FileInfo], work_dir: Path) -> None:
    """Copy each input into ``work_dir`` and verify it; ``StagingError`` if one fails."""
    for info in inputs:
        try:
            copy_verified(
                se.path(info.scope, info.name),
                work_dir / info.name,
                Checksum(info.size, info.adler32),
            )
        except (OSError, ValueError) as exc:
            raise StagingError(
                PilotError.STAGE_IN_FAILED, f"stage-in of {info.scope}:{info.name} failed: {exc}"
            ) from exc


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


def stage_out(se: StorageElement, attempt: Attempt, work_dir: Path, with_outputs: bool) -> StageOut:
    """Stage the log tarball and, ``with_outputs``, every declared output on the SE."""
    result = StageOut()
    staging = se.staging(attempt.spec.id, attempt.number)
    for name in attempt.spec.output_files if with_outputs else []:
        try:
            result.files.append(_store(work_dir / name, staging, attempt.scope, "output"))
        except OSError as exc:
            result.problem = f"declared output {name} not stored: {exc.strerror or exc}"
            break
    try:
        tarball = _log_tarball(work_dir, log_name(attempt.spec.id, attempt.number))
        result.files.append(_store(tarball, staging, attempt.scope, "log"))
    except OSError as exc:
        result.problem = result.problem or f"log tarball not stored: {exc.strerror or exc}"
    return result


def _store(source: Path, staging: Path, scope: str, role: Literal["output", "log"]) -> FileInfo:
    """Copy one file into the attempt's staging directory, verified; its description.
    ``OSError`` if it cannot."""
    if not source.is_file():
        raise FileNotFoundError(f"{source.name} is missing from the work directory")
    found = checksum(source)
    try:
        copy_verified(source, staging / source.name, found)
    except ValueError as exc:
        raise OSError(str(exc)) from exc
    return FileInfo(scope, source.name, str(uuid.uuid4()), found.size, found.adler32, role)


def _log_tarball(work_dir: Path, name: str) -> Path:
    """A gzipped tarball of the payload's stdout and stderr."""
    path = work_dir / name
    with tarfile.open(path, "w:gz") as tar:
        for member in LOG_FILES:
            if (work_dir / member).is_file():
                tar.add(work_dir / member, arcname=member)
        if not tar.getmembers():
            info = tarfile.TarInfo("empty")
            tar.addfile(info, io.BytesIO(b""))
    return path
