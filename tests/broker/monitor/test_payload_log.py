"""Reading a log tarball back: a long log's tail, and a file that is not a tarball."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from broker.monitor.payload_log import TAIL_BYTES, LogUnreadable, StoredLog, read_log, tail


def tarball(path: Path, **members: bytes) -> StoredLog:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            (path.parent / name).write_bytes(data)
            tar.add(path.parent / name, arcname=name)
    return StoredLog("j1", 1, "SITE_A", str(path))


def test_a_long_log_is_read_from_its_end_in_whole_lines(tmp_path: Path) -> None:
    lines = [f"line {i}" for i in range(50_000)]
    log = tarball(tmp_path / "j1.1.log.tgz", **{"payload.stdout": "\n".join(lines).encode()})
    text = read_log(log, TAIL_BYTES)["payload.stdout"]
    assert len(text) < TAIL_BYTES and text.splitlines()[0] in lines
    assert tail(text, 100).splitlines() == lines[-100:]
    assert read_log(log)["payload.stdout"].splitlines() == lines


def test_a_file_that_is_not_a_tarball_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "j1.1.log.tgz"
    path.write_bytes(b"not a tarball")
    with pytest.raises(
        LogUnreadable, match=r"log of job j1 attempt 1 \(SITE_A:.*\) cannot be read"
    ):
        read_log(StoredLog("j1", 1, "SITE_A", str(path)))
