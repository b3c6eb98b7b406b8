"""Stage-in and stage-out through Rucio's download and upload clients, on a real Rucio
server (tests/rucio_server.py) with posix RSEs in temporary directories."""

from __future__ import annotations

import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from broker.error_codes import PilotError
from broker.protocol import FileInfo, JobSpec
from broker.settings import PILOT_STORAGES, Settings
from ddm_bridge.se import checksum
from pilot_agent.storage import STORAGES, Attempt, StagingError, open_storage
from pilot_agent.storage.rucio import RucioStorage
from tests.conftest import test_settings
from tests.ddm_bridge.conftest import rucio_settings
from tests.rucio_server import RucioServer, rucio_server

SCOPE = "data"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RucioServer]:
    """A Rucio server for this module, with the scope the tests write into."""
    with rucio_server(tmp_path_factory.mktemp("rucio")) as started:
        started.add_scope(SCOPE)
        yield started


@pytest.fixture
def settings(
    server: RucioServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    """Settings for a pilot at SITE_A or SITE_B, each site on an RSE of the test's own."""
    monkeypatch.delenv("RUCIO_CONFIG", raising=False)
    tag = uuid.uuid4().hex[:6].upper()
    made = rucio_settings(
        server,
        test_settings("memory://", "sqlite://", tmp_path),
        pilot_storage="rucio",
        rucio_rses=f"SITE_A=A_{tag},SITE_B=B_{tag}",
    )
    for site in ("SITE_A", "SITE_B"):
        server.add_rse(made.rse_of(site), tmp_path / "rse" / site)
    yield made
    from rucio.common.config import clean_cached_config

    clean_cached_config()


def _registered(server: RucioServer, settings: Settings, site: str, content: bytes) -> FileInfo:
    """A new file at ``site``'s RSE, a replica in Rucio; described as a claim names it."""
    name = f"in.{uuid.uuid4().hex[:8]}.dat"
    rse = settings.rse_of(site)
    path = Path(settings.ddm_root).parent / "rse" / site / SCOPE / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    found = checksum(path)
    server.client().add_replicas(
        rse, [{"scope": SCOPE, "name": name, "bytes": found.size, "adler32": found.adler32}]
    )
    return FileInfo(SCOPE, name, str(uuid.uuid4()), found.size, found.adler32, rse=rse)


def test_every_pilot_storage_setting_names_a_storage() -> None:
    assert set(STORAGES) == set(PILOT_STORAGES)


def test_stage_in_downloads_from_the_replica_the_claim_names(
    server: RucioServer, settings: Settings, tmp_path: Path
) -> None:
    # Given an input whose only replica is at SITE_A's RSE, and a pilot at SITE_B
    info = _registered(server, settings, "SITE_A", b"events " * 100)
    storage = open_storage(settings, "SITE_B")
    assert isinstance(storage, RucioStorage)
    # When the claim names that replica, Then it is downloaded into the work directory
    storage.stage_in([info], tmp_path / "work")
    assert checksum(tmp_path / "work" / info.name).adler32 == info.adler32
    # And a description that does not match what arrived fails with the stage-in code
    wrong = FileInfo(SCOPE, info.name, info.guid, info.size, "00000001", rse=info.rse)
    with pytest.raises(StagingError, match="adler32") as caught:
        storage.stage_in([wrong], tmp_path / "work2")
    assert caught.value.code == PilotError.STAGE_IN_FAILED
    # And a file Rucio has no replica of at the RSE named fails, naming the DID
    elsewhere = FileInfo(SCOPE, info.name, info.guid, info.size, info.adler32)  # (SITE_B's)
    with pytest.raises(StagingError, match=f"{SCOPE}:{info.name}") as caught:
        storage.stage_in([elsewhere], tmp_path / "work3")
    assert caught.value.code == PilotError.STAGE_IN_FAILED


def _replica(server: RucioServer, did: str) -> dict[str, Any]:
    scope, name = did.split(":")
    (replica,) = server.client().list_replicas([{"scope": scope, "name": name}], schemes=["file"])
    return dict(replica)


def test_stage_out_uploads_outputs_and_log_to_the_site_s_rse(
    server: RucioServer, settings: Settings, tmp_path: Path
) -> None:
    # Given a work directory with one declared output and the payload's stdout
    work = tmp_path / "work"
    work.mkdir()
    job_id = uuid.uuid4().hex
    (work / f"out.{job_id}").write_bytes(b"result " * 50)
    (work / "payload.stdout").write_text("hello\n")
    spec = JobSpec(command="true", id=job_id, output_files=[f"out.{job_id}"])
    storage = open_storage(settings, "SITE_B")
    # When the attempt is staged out
    stored = storage.stage_out(Attempt(spec, 1, SCOPE), work, with_outputs=True)
    # Then both files are replicas at SITE_B's RSE in Rucio, with the bytes and adler32 of
    # the files there, and described for the final event
    assert stored.problem == ""
    assert [(f.name, f.role) for f in stored.files] == [
        (f"out.{job_id}", "output"),
        (f"{job_id}.1.log.tgz", "log"),
    ]
    rse = settings.rse_of("SITE_B")
    for info in stored.files:
        replica = _replica(server, f"{SCOPE}:{info.name}")
        (pfn,) = replica["rses"][rse]
        on_rse = checksum(Path(urlsplit(pfn).path))
        assert (on_rse.size, on_rse.adler32) == (replica["bytes"], replica["adler32"])
        assert (info.size, info.adler32) == (on_rse.size, on_rse.adler32)
    (log_pfn,) = _replica(server, f"{SCOPE}:{job_id}.1.log.tgz")["rses"][rse]
    with tarfile.open(urlsplit(log_pfn).path) as tar:
        assert tar.getnames() == ["payload.stdout"]
    # And staging out again (a pilot that repeats it), the output Rucio has with the same
    # bytes counts as stored, while the log tarball, made again with other bytes (here the
    # stdout grew; a tarball made in another second differs by its time too), is refused:
    # Rucio keeps one file under a name
    (work / "payload.stdout").write_text("hello\nagain\n")
    again = storage.stage_out(Attempt(spec, 1, SCOPE), work, with_outputs=True)
    assert [f.adler32 for f in again.files] == [stored.files[0].adler32]
    assert again.problem.startswith("log tarball not stored: upload to"), again.problem


def test_stage_out_names_a_missing_output_and_still_uploads_the_log(
    settings: Settings, tmp_path: Path
) -> None:
    # Given a payload that did not write its declared output
    work = tmp_path / "work"
    work.mkdir()
    job_id = uuid.uuid4().hex
    spec = JobSpec(command="true", id=job_id, output_files=["never.txt"])
    # When it is staged out, Then the problem names it, and the log is stored all the same
    stored = open_storage(settings, "SITE_B").stage_out(Attempt(spec, 2, SCOPE), work, True)
    assert "declared output never.txt not stored" in stored.problem
    assert [f.name for f in stored.files] == [f"{job_id}.2.log.tgz"]


def test_an_upload_rucio_refuses_is_a_stage_out_problem_naming_the_reason(
    settings: Settings, tmp_path: Path
) -> None:
    # Given an attempt whose scope Rucio does not have
    work = tmp_path / "work"
    work.mkdir()
    spec = JobSpec(command="true", id=uuid.uuid4().hex)
    # When it is staged out, Then the log is not stored, and the problem says why
    stored = open_storage(settings, "SITE_B").stage_out(Attempt(spec, 1, "nosuchscope"), work, True)
    assert stored.files == []
    assert "log tarball not stored: upload to" in stored.problem
    assert "nosuchscope" in stored.problem
