"""The site's storage through Rucio's own clients: download for stage-in, upload for stage-out.

Stage-in downloads each input from the replica the claim reply names (its RSE,
``FileInfo.rse``; the site's RSE when the claim names none) with Rucio's
``DownloadClient`` (``download_dids``: Rucio gives the replica's URL at that
RSE and the protocol its RSE declares reads it; the client checks the copy's
adler32 against Rucio's), then checks size and adler32 against the claim's.

Stage-out uploads the declared outputs (when the payload succeeded) and the log
tarball to the site's RSE (``rucio_rses``) with ``UploadClient``, in the
attempt's scope, each where the RSE keeps its DID, and registers each as a
replica there after its upload (``register_after_upload``: a file that did not
arrive is never registered; an upload made again after a registered one of the
same bytes and adler32 is skipped, and the file counts as stored). The client
compares the stored file's size and adler32 with the local one's. The bridge's
Adder then attaches them to their datasets (``RucioDDM.add_outputs``), as
PanDA's pilot uploads and its Adder adds to datasets.

Rucio's clients read a ``rucio.cfg`` for the clients they make themselves (the RSE's
protocols are asked with a client of their own): unless ``RUCIO_CONFIG`` names the
site's, ``configure`` writes one from pandamq's settings. ``rucio.client`` is
imported only when a pilot opens this storage.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from broker.error_codes import PilotError
from broker.errors import ConfigError
from broker.protocol import FileInfo
from ddm_bridge.rucio_login import connect
from ddm_bridge.se import Checksum, checksum, log_name, mismatch
from pilot_agent.storage import Attempt, StageOut, StagingError
from pilot_agent.storage.local import log_tarball

if TYPE_CHECKING:
    from broker.settings import Settings

log = logging.getLogger(__name__)


class RucioStorage:
    """The RSE of the pilot's site, reached through Rucio; a ``Storage``."""

    def __init__(self, settings: Settings, site: str) -> None:
        self._settings = settings
        self.rse = settings.rse_of(site)
        self._client: Any = None

    def stage_in(self, inputs: Sequence[FileInfo], work_dir: Path) -> None:
        """Download each input from its replica into ``work_dir`` and verify it;
        ``StagingError`` if one fails."""
        if not inputs:
            return
        from rucio.client.downloadclient import DownloadClient

        items = [
            {
                "did": f"{i.scope}:{i.name}",
                "rse": i.rse or self.rse,
                "base_dir": str(work_dir),
                "no_subdir": True,
            }
            for i in inputs
        ]
        try:
            DownloadClient(client=self._rucio(), logger=log).download_dids(items)
        except Exception as exc:  # Rucio's and the network's errors, named in the report
            dids = ", ".join(f"{i.scope}:{i.name}" for i in inputs)
            raise StagingError(
                PilotError.STAGE_IN_FAILED, f"stage-in of {dids} from Rucio failed: {_say(exc)}"
            ) from exc
        for info in inputs:
            problem = mismatch(work_dir / info.name, Checksum(info.size, info.adler32))
            if problem is not None:
                raise StagingError(
                    PilotError.STAGE_IN_FAILED, f"stage-in of {info.scope}:{info.name}: {problem}"
                )

    def stage_out(self, attempt: Attempt, work_dir: Path, with_outputs: bool) -> StageOut:
        """Upload the log tarball and, ``with_outputs``, every declared output to the RSE."""
        result = StageOut()
        for name in attempt.spec.output_files if with_outputs else []:
            try:
                result.files.append(self._upload(work_dir / name, attempt.scope, "output"))
            except OSError as exc:
                result.problem = f"declared output {name} not stored: {exc}"
                break
        try:
            tarball = log_tarball(work_dir, log_name(attempt.spec.id, attempt.number))
            result.files.append(self._upload(tarball, attempt.scope, "log"))
        except OSError as exc:
            result.problem = result.problem or f"log tarball not stored: {exc}"
        return result

    def _upload(self, path: Path, scope: str, role: Literal["output", "log"]) -> FileInfo:
        """Upload one file to the RSE and register it there; its description. ``OSError``
        naming Rucio's reason if it cannot."""
        if not path.is_file():
            raise FileNotFoundError(f"{path.name} is missing from the work directory")
        found = checksum(path)
        guid = str(uuid.uuid4())
        item = {
            "path": str(path),
            "rse": self.rse,
            "did_scope": scope,
            "did_name": path.name,
            "guid": guid.replace("-", ""),
            "register_after_upload": True,
        }
        from rucio.client.uploadclient import UploadClient

        try:
            UploadClient(_client=self._rucio(), logger=log).upload([item])
        except Exception as exc:  # Rucio's and the network's errors, named in the report
            # (an upload made again after one that was registered is skipped, and said so)
            if type(exc).__name__ != "NoFilesUploaded" or not self._has(scope, path.name, found):
                raise OSError(f"upload to {self.rse} as {scope}:{path.name}: {_say(exc)}") from exc
        return FileInfo(scope, path.name, guid, found.size, found.adler32, role)

    def _has(self, scope: str, name: str, expected: Checksum) -> bool:
        """Whether Rucio has ``scope:name`` at the RSE with these bytes and adler32."""
        replicas = self._rucio().list_replicas(
            [{"scope": scope, "name": name}], rse_expression=self.rse
        )
        return any(
            r.get("rses", {}).get(self.rse)
            and (r["bytes"], str(r["adler32"]).zfill(8)) == (expected.size, expected.adler32)
            for r in replicas
        )

    def _rucio(self) -> Any:
        """The Rucio client, logged in at first use; ``OSError`` if it cannot log in."""
        if self._client is None:
            configure(self._settings)
            try:
                self._client = connect(self._settings)
            except Exception as exc:  # Rucio's and the network's errors, named in the report
                host = self._settings.rucio_host
                raise OSError(f"cannot log in to Rucio at {host}: {_say(exc)}") from exc
        return self._client


def configure(settings: Settings) -> None:
    """Give Rucio's clients a ``rucio.cfg`` from pandamq's settings, unless ``RUCIO_CONFIG``
    names one already (the site's). The download and upload clients read the server and
    the login from it for the clients they make themselves (``rsemanager`` asks the RSE's
    protocols with an ``RSEClient()`` of its own)."""
    if os.environ.get("RUCIO_CONFIG"):
        return
    path = Path(settings.work_dir) / ".rucio" / "rucio.cfg"
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # a password
    with os.fdopen(descriptor, "w") as f:
        f.write(_client_config(settings))
    os.environ["RUCIO_CONFIG"] = str(path)
    from rucio.common.config import clean_cached_config

    clean_cached_config()


def _client_config(settings: Settings) -> str:
    login = {
        "rucio_host": settings.rucio_host,
        "auth_host": settings.rucio_auth_host or settings.rucio_host,
        "account": settings.rucio_account,
        "auth_type": settings.rucio_auth_type,
        "username": settings.rucio_username,
        "password": settings.rucio_password,
        "client_cert": settings.rucio_cert,
        "client_key": settings.rucio_key,
        "client_x509_proxy": settings.rucio_cert,
        "ca_cert": settings.rucio_ca,
    }
    lines = [f"{k} = {v}" for k, v in login.items() if v and "\n" not in v]
    return "[client]\n" + "\n".join(lines) + "\n"


def open_rucio(settings: Settings, site: str) -> RucioStorage:
    """The RSE of ``site``, through Rucio; ``ConfigError`` at once where Rucio's clients
    are not installed (rather than a failed stage-in for every job)."""
    if importlib.util.find_spec("rucio") is None:
        raise ConfigError(
            "pilot_storage 'rucio' needs Rucio's clients: "
            "install pandamq[rucio] (pip install 'pandamq[rucio]')"
        )
    return RucioStorage(settings, site)


def _say(exc: Exception) -> str:
    """One line: the exception's kind and Rucio's reason."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"
