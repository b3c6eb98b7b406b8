"""What every DDM backend does, written once and run on the local DDM and on a real Rucio
(the ``ddm`` fixture, tests/ddm_bridge/conftest.py)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from broker.errors import BadInput, NameTaken
from broker.store.datasets import FileRecord
from ddm_bridge.se import Checksum, checksum, se_path, staging_dir
from tests.ddm_bridge.conftest import DDM, SCOPE


def test_registered_files_are_in_their_dataset_with_size_and_adler32(ddm: DDM) -> None:
    # Given two files registered into a dataset at a site
    site = ddm.new_site()
    dataset = f"in.{uuid.uuid4().hex}"
    records = [ddm.put(dataset, site, b"%d" % i * 1000) for i in range(2)]
    # When the same files are registered again
    placed = [(r, se_path(ddm.settings.ddm_root, site, r.scope, r.name)) for r in records]
    again = ddm.backend.register(dataset, site, placed, "input")
    # Then none is new, and the backend's catalogue has each once with its size and adler32
    assert again == 0
    assert ddm.catalogue(dataset) == {r.did: (r.size, r.adler32) for r in records}


def test_a_subscription_completes_with_every_file_at_the_site(ddm: DDM) -> None:
    # Given two files at site A, in a dispatch dataset for site B
    site_a, site_b = ddm.new_site(), ddm.new_site()
    records = [ddm.put(f"in.{uuid.uuid4().hex}", site_a, b"x" * (n + 1) * 700) for n in range(2)]
    dispatch = ddm.dispatch(records)
    # When B is subscribed to it (twice: subscribing again is harmless)
    ddm.backend.subscribe(dispatch, site_b)
    ddm.backend.subscribe(dispatch, site_b)
    reports = ddm.until_ended(dispatch, site_b)
    # Then it is done, every file reported placed once, at a path on B's SE
    assert reports[-1].state == "done", reports
    placed = dict(p for r in reports for p in r.placed)
    assert sorted(placed) == sorted(r.did for r in records)
    assert len([p for r in reports for p in r.placed]) == len(records)
    # And each copy at B has the size and adler32 the catalogue holds (checked on both sides)
    for record in records:
        path = Path(placed[record.did])
        assert path == se_path(ddm.settings.ddm_root, site_b, record.scope, record.name)
        assert checksum(path) == Checksum(record.size, record.adler32)
    assert ddm.catalogue(dispatch) == {r.did: (r.size, r.adler32) for r in records}


def test_a_subscription_whose_only_source_is_corrupt_fails_with_the_reason(ddm: DDM) -> None:
    # Given a file at A whose bytes on A's SE no longer match its adler32
    site_a, site_b = ddm.new_site(), ddm.new_site()
    record = ddm.put(f"in.{uuid.uuid4().hex}", site_a, b"right" * 100)
    se_path(ddm.settings.ddm_root, site_a, record.scope, record.name).write_bytes(b"wrong" * 100)
    dispatch = ddm.dispatch([record])
    # When B is subscribed to it
    ddm.backend.subscribe(dispatch, site_b)
    reports = ddm.until_ended(dispatch, site_b, timeout_s=90)
    # Then the subscription failed, saying the checksum did not match, and no file was placed
    assert reports[-1].state == "failed", reports
    assert "adler32" in (reports[-1].error or ""), reports[-1]
    assert [p for r in reports for p in r.placed] == []
    assert not se_path(ddm.settings.ddm_root, site_b, record.scope, record.name).exists()


def test_outputs_are_registered_into_their_dataset_which_is_then_closed(ddm: DDM) -> None:
    # Given two outputs a job wrote on its site's SE
    site = ddm.new_site()
    output = f"out.{uuid.uuid4().hex}"
    placed = []
    for n in range(2):
        record = _on_se(ddm, site, f"out.{uuid.uuid4().hex[:8]}._{n:06d}", b"o" * (n + 5))
        placed.append((record, se_path(ddm.settings.ddm_root, site, record.scope, record.name)))
    # When they are registered into the output dataset, and it is closed
    assert ddm.backend.register(output, site, placed, "output") == 2
    assert ddm.is_open(output)
    ddm.backend.close(output)
    # Then the dataset holds both, with their sizes and checksums, and is closed
    assert ddm.catalogue(output) == {r.did: (r.size, r.adler32) for r, _ in placed}
    assert not ddm.is_open(output)


def test_a_file_that_does_not_match_its_checksum_is_not_registered(ddm: DDM) -> None:
    # Given a file on the SE whose bytes are not what its record says
    site = ddm.new_site()
    record = _on_se(ddm, site, f"bad.{uuid.uuid4().hex[:8]}", b"abc")
    wrong = FileRecord(record.scope, record.name, record.guid, record.size, "00000000")
    path = se_path(ddm.settings.ddm_root, site, record.scope, record.name)
    # When it is registered, Then it is refused, named, and the dataset is not made
    dataset = f"in.{uuid.uuid4().hex}"
    with pytest.raises(BadInput, match=rf"cannot register {record.did}: .*adler32"):
        ddm.backend.register(dataset, site, [(wrong, path)], "input")
    assert ddm.catalogue(dataset) == {}


def _on_se(ddm: DDM, site: str, name: str, content: bytes, scope: str = "data") -> FileRecord:
    path = se_path(ddm.settings.ddm_root, site, scope, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    found = checksum(path)
    return FileRecord(scope, name, str(uuid.uuid4()), found.size, found.adler32)


def test_a_name_registered_again_with_other_content_is_refused_as_taken(ddm: DDM) -> None:
    # Given a file registered at site A
    site_a, site_b = ddm.new_site(), ddm.new_site()
    record = ddm.put(f"in.{uuid.uuid4().hex}", site_a, b"first")
    # When another file of the same DID is registered at B
    other = _on_se(ddm, site_b, record.name, b"second, longer", scope=record.scope)
    path = se_path(ddm.settings.ddm_root, site_b, record.scope, record.name)
    # Then it is refused as a name taken
    with pytest.raises(NameTaken):
        ddm.backend.register(f"in.{uuid.uuid4().hex}", site_b, [(other, path)], "input")


def _staged(ddm: DDM, site: str, job_id: str, attempt: int, count: int) -> list[FileRecord]:
    """``count`` outputs an attempt staged at ``site``, as a pilot leaves them."""
    staging = staging_dir(ddm.settings.ddm_root, site, job_id, attempt)
    staging.mkdir(parents=True)
    records = []
    for n in range(count):
        path = staging / f"out.{job_id[:8]}._{n:06d}"
        path.write_bytes(b"out %d " % n * (n + 50))
        found = checksum(path)
        records.append(FileRecord(SCOPE, path.name, str(uuid.uuid4()), found.size, found.adler32))
    return records


def test_an_attempts_outputs_are_kept_at_their_place_and_keeping_them_again_is_harmless(
    ddm: DDM,
) -> None:
    # Given two outputs attempt 1 of a job staged at its site
    site, job_id = ddm.new_site(), uuid.uuid4().hex
    records = _staged(ddm, site, job_id, 1, 2)
    output = f"out.{uuid.uuid4().hex}"
    # When the backend keeps them into their dataset, twice (a bridge that died and came back)
    kept = ddm.backend.add_outputs(site, job_id, 1, [(output, r) for r in records])
    again = ddm.backend.add_outputs(site, job_id, 1, [(output, r) for r in records])
    # Then each is at its place on the site's SE, whole, and the staging directory is gone
    assert kept == again
    assert sorted(kept) == sorted(r.did for r in records)
    for record in records:
        assert checksum(Path(kept[record.did])) == Checksum(record.size, record.adler32)
    assert not staging_dir(ddm.settings.ddm_root, site, job_id, 1).exists()


def test_an_output_not_staged_or_not_matching_is_refused_by_name(ddm: DDM) -> None:
    # Given an attempt that staged one file, and reports another it did not stage
    site, job_id = ddm.new_site(), uuid.uuid4().hex
    (record,) = _staged(ddm, site, job_id, 1, 1)
    missing = FileRecord(SCOPE, "never.staged", str(uuid.uuid4()), 10, "00000001")
    wrong = FileRecord(SCOPE, record.name, record.guid, record.size, "00000000")
    # When the backend is asked to keep them, Then each is refused, named
    with pytest.raises(BadInput, match=rf"{missing.did} not accepted: .*not staged"):
        ddm.backend.add_outputs(site, job_id, 1, [("out", missing)])
    with pytest.raises(BadInput, match=rf"{record.did} not accepted: .*adler32"):
        ddm.backend.add_outputs(site, job_id, 1, [("out", wrong)])


def test_what_an_attempt_staged_and_was_not_kept_is_removed(ddm: DDM) -> None:
    # Given an attempt that staged a file
    site, job_id = ddm.new_site(), uuid.uuid4().hex
    (record,) = _staged(ddm, site, job_id, 2, 1)
    # When the backend discards the attempt's outputs (twice: harmless)
    ddm.backend.discard_outputs(site, job_id, 2)
    ddm.backend.discard_outputs(site, job_id, 2)
    # Then nothing of it is left on the SE
    assert not staging_dir(ddm.settings.ddm_root, site, job_id, 2).exists()
    assert not se_path(ddm.settings.ddm_root, site, record.scope, record.name).exists()
