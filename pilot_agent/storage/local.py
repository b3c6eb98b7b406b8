"""The site's storage element as a directory (the local DDM's SE, or a mounted RSE).

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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from broker.error_codes import PilotError
from broker.protocol import LOG_FILES, FileInfo
from ddm_bridge.se import (
    Checksum,
    checksum,
    copy_verified,
    log_name,
    se_path,
    staging_dir,
)
from pilot_agent.storage import Attempt, StageOut, StagingError

if TYPE_CHECKING:
    from broker.settings import Settings


@dataclass(frozen=True)
class LocalSE:
    """The SE of the pilot's site under the local DDM's root; a ``Storage``."""

    root: str
    site: str

    def path(self, scope: str, name: str) -> Path:
        """Where ``scope:name`` lives on this SE."""
        return se_path(self.root, self.site, scope, name)

    def staging(self, job_id: str, attempt: int) -> Path:
        """Where one attempt stages its files on this SE."""
        return staging_dir(self.root, self.site, job_id, attempt)

    def stage_in(self, inputs: Sequence[FileInfo], work_dir: Path) -> None:
        """Copy each input into ``work_dir`` and verify it; ``StagingError`` if one fails."""
        _stage_in(self, inputs, work_dir)

    def stage_out(self, attempt: Attempt, work_dir: Path, with_outputs: bool) -> StageOut:
        """Stage the log tarball and, ``with_outputs``, every declared output on the SE."""
        return _stage_out(self, attempt, work_dir, with_outputs)


def open_local(settings: Settings, site: str) -> LocalSE:
    """The SE of ``site`` under ``ddm_root``."""
    return LocalSE(settings.ddm_root, site)


def _stage_in(se: LocalSE, inputs: Sequence[FileInfo], work_dir: Path) -> None:
    for info in inputs:
        # The replica the claim names, where the catalogue has it (a Rucio RSE keeps a
        # user.x scope under user/x/); else where the local DDM keeps it.
        source = Path(info.pfn) if info.pfn.startswith("/") else se.path(info.scope, info.name)
        try:
            copy_verified(
                source,
                work_dir / info.name,
                Checksum(info.size, info.adler32),
            )
        except (OSError, ValueError) as exc:
            raise StagingError(
                PilotError.STAGE_IN_FAILED, f"stage-in of {info.scope}:{info.name} failed: {exc}"
            ) from exc


def _stage_out(se: LocalSE, attempt: Attempt, work_dir: Path, with_outputs: bool) -> StageOut:
    result = StageOut()
    staging = se.staging(attempt.spec.id, attempt.number)
    for name in attempt.spec.output_files if with_outputs else []:
        try:
            result.files.append(_store(work_dir / name, staging, attempt.scope, "output"))
        except OSError as exc:
            result.problem = f"declared output {name} not stored: {exc.strerror or exc}"
            break
    try:
        tarball = log_tarball(work_dir, log_name(attempt.spec.id, attempt.number))
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


def log_tarball(work_dir: Path, name: str) -> Path:
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
