"""A process that logs in with a token: who it is, and its token file read afresh."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from broker.errors import ConfigError
from broker.security import identity, token_login, tokens
from broker.settings import Settings

KEY = tokens.new_key()


def settings_with(path: Path, token: str) -> Settings:
    path.write_text(token + "\n")
    return Settings.load(environ={}, broker_url="amqp://h/v", broker_token_file=str(path))


def test_the_user_is_the_tokens_client_id_else_its_sub_as_rabbitmq_names_it(
    tmp_path: Path,
) -> None:
    # Given a token with a sub only, and one with a client_id too
    by_sub = tokens.issue(KEY, "k", "pilot.SITE_A", ["pandamq.read:v/*"])
    settings = settings_with(tmp_path / "t", by_sub)
    # Then the process's identity (its messages' user_id) is the sub
    assert identity.of(settings) == "pilot.SITE_A"
    # And a client_id wins, as in RabbitMQ 3.10
    claims = token_login.claims_of(by_sub, "t") | {"client_id": "pilot.SITE_B"}
    assert token_login.user(claims) == "pilot.SITE_B"


def test_the_token_file_is_read_again_each_time(tmp_path: Path) -> None:
    # Given a settings object naming a token file
    settings = settings_with(tmp_path / "t", tokens.issue(KEY, "k", "user.alice", []))
    assert identity.of(settings) == "user.alice"
    # When the file is renewed with another user's token, Then the next read sees it
    (tmp_path / "t").write_text(tokens.issue(KEY, "k", "user.bob", []))
    assert identity.of(settings) == "user.bob"


def test_a_token_file_caught_while_it_is_written_is_read_again(tmp_path: Path) -> None:
    # Given a token file a renewer has begun to write in place, and ends 0.3 s later
    token = tokens.issue(KEY, "k", "pilot.SITE_A", [])
    path = tmp_path / "t"
    path.write_text(token[: len(token) // 3])
    done = threading.Timer(0.3, path.write_text, [token + "\n"])
    done.start()
    try:
        # When it is read, Then the whole token is what comes back
        assert token_login.read(str(path)) == token
    finally:
        done.join()


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("", "1 dot-separated parts, not 3"),
        ("a.b", "2 dot-separated parts, not 3"),
        ("a.!!!!.c", "holds no JWT access token"),
        ("a.WzFd.c", "the token's claims are not an object"),
    ],
)
def test_a_file_without_a_token_is_refused_in_one_line(
    tmp_path: Path, content: str, why: str
) -> None:
    (tmp_path / "t").write_text(content)
    with pytest.raises(ConfigError, match=why):
        token_login.read(str(tmp_path / "t"))


def test_the_vhosts_a_token_names_are_those_of_its_audiences_scopes() -> None:
    claims = {
        "aud": ["pandamq"],
        "scope": "pandamq.read:grid%2Fprod/x other.read:elsewhere/y pandamq.write:v2/z openid",
    }
    assert token_login.vhosts(claims) == ["grid/prod", "v2"]
