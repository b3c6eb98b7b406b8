"""Stage-in and stage-out on a site's SE (local directories)."""

from __future__ import annotations

import tarfile
import uuid
from pathlib import Path

import pytest

from broker.error_codes import PilotError
from broker.protocol import FileInfo, JobSpec
from ddm_bridge.se import checksum
from pilot_agent.storage import Attempt, StagingError
from pilot_agent.storage.local import LocalSE


def test_stage_in_copies_and_verifies_each_input(tmp_path: Path) -> None:
    # Given a file on the SE and a description of it, right and wrong
    se = LocalSE(str(tmp_path / "se"), "SITE")
    path = se.path("data", "a.dat")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"payload input")
    found = checksum(path)
    good = FileInfo("data", "a.dat", str(uuid.uuid4()), found.size, found.adler32)
    work = tmp_path / "work"
    # When it is staged in, Then the copy is in the work directory
    se.stage_in([good], work)
    assert (work / "a.dat").read_bytes() == b"payload input"
    # And a copy that does not match its checksum fails with the stage-in code
    bad = FileInfo("data", "a.dat", good.guid, found.size, "00000001")
    with pytest.raises(StagingError, match="adler32") as caught:
        se.stage_in([bad], tmp_path / "work2")
    assert caught.value.code == PilotError.STAGE_IN_FAILED


def test_stage_out_stages_outputs_and_the_log_and_names_a_missing_output(tmp_path: Path) -> None:
    # Given a work directory with one of two declared outputs and the payload's stdout
    se = LocalSE(str(tmp_path / "se"), "SITE")
    work = tmp_path / "work"
    work.mkdir()
    (work / "one.txt").write_text("1")
    (work / "payload.stdout").write_text("hello")
    spec = JobSpec(command="true", id="job-1", output_files=["one.txt", "two.txt"])
    # When attempt 2 is staged out
    result = se.stage_out(Attempt(spec, 2, "user.alice"), work, with_outputs=True)
    # Then the present output and the log are in the attempt's staging directory,
    # described in the job's scope, and the missing one is named
    assert [(f.scope, f.name, f.role) for f in result.files] == [
        ("user.alice", "one.txt", "output"),
        ("user.alice", "job-1.2.log.tgz", "log"),
    ]
    assert "two.txt" in result.problem
    staged = se.staging("job-1", 2)
    assert checksum(staged / "one.txt").adler32 == result.files[0].adler32
    with tarfile.open(staged / "job-1.2.log.tgz") as tar:
        assert tar.getnames() == ["payload.stdout"]
    # And nothing is in the scope's own directory before the broker accepts it
    assert not se.path("user.alice", "one.txt").exists()
