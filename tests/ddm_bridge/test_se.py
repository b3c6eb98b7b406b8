"""Storage element files: checksums and verified copies."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest

from ddm_bridge.se import Checksum, checksum, copy_verified


def test_checksum_is_size_and_adler32_in_hex(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"hello world")
    assert checksum(path) == Checksum(11, f"{zlib.adler32(b'hello world'):08x}")


def test_a_copy_that_does_not_match_leaves_nothing_behind(tmp_path: Path) -> None:
    # Given a source whose content is not what the catalogue says
    source = tmp_path / "src"
    source.write_bytes(b"abc")
    destination = tmp_path / "se" / "scope" / "dst"
    # When it is copied, Then the copy is refused and no file (nor partial file) remains
    with pytest.raises(ValueError, match="adler32"):
        copy_verified(source, destination, Checksum(3, "00000000"))
    assert list(destination.parent.iterdir()) == []
    # And a right copy lands
    copy_verified(source, destination, checksum(source))
    assert destination.read_bytes() == b"abc"
