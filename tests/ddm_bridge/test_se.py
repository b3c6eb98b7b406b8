"""Storage element files: checksums and verified copies."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest

from broker.protocol import NAME_PATTERN
from broker.scopes import owner_scope
from ddm_bridge.se import Checksum, accept, checksum, copy_verified, discard, se_path, staging_dir


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


@pytest.mark.parametrize(
    ("owner", "scope"),
    [
        ("user.alice", "user.alice"),
        ("guest", "user.guest"),
        (None, "user"),
    ],
)
def test_an_owner_s_scope_is_user_dot_name(owner: str | None, scope: str) -> None:
    # Given an owner's validated identity, When its scope is derived, Then it is user.<name>
    assert owner_scope(owner) == scope


def test_an_owner_name_no_scope_may_hold_gets_a_valid_scope_of_its_own() -> None:
    # Given owners whose names are not valid in a scope, or too long, and alike once mended
    owners = ["user.a b", "user.a_b", "CN=Jo Doe/O=Grid", "x" * 100, "x" * 101]
    # When their scopes are derived
    scopes = [owner_scope(o) for o in owners]
    # Then each is a valid scope name, and no two owners share one
    assert all(NAME_PATTERN.match(s) for s in scopes), scopes
    assert len(set(scopes)) == len(owners)


def test_a_staged_file_is_accepted_once_and_again_after_a_rollback(tmp_path: Path) -> None:
    # Given a file staged by an attempt
    staged = staging_dir(str(tmp_path), "SITE", "job", 1) / "out.txt"
    staged.parent.mkdir(parents=True)
    staged.write_text("out")
    expected = checksum(staged)
    destination = se_path(str(tmp_path), "SITE", "user.a", "out.txt")
    # When it is accepted, Then it is moved into its place
    assert accept(staged, destination, expected) is None
    assert destination.read_text() == "out" and not staged.exists()
    # And accepting it again (a transaction run again) is no refusal
    assert accept(staged, destination, expected) is None
    # But a file never staged is refused, named
    other = staged.with_name("other.txt")
    assert "other.txt was not staged" in (accept(other, destination.with_name("o"), expected) or "")
    # And discarding the attempt removes its staging directory
    discard(str(tmp_path), "SITE", "job", 1)
    assert not staged.parent.exists()
