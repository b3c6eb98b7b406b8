"""``pandamq tokens``: a signing key written 0600, RabbitMQ's lines for it, tokens with a
role's scopes that verify with the key, and one line for each bad input."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import jwt
import pytest
from click.testing import CliRunner

from broker.errors import ConfigError
from broker.security import scopes, tokens
from broker.settings import Settings
from cli.main import pandamq


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(pandamq, list(args))
    return result.exit_code, result.stdout, result.stderr


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_writes_the_key_0600_and_prints_rabbitmqs_lines(tmp_path: Path) -> None:
    # When a signing key is made
    code, out, _ = run("tokens", "init", "--dir", str(tmp_path), "--kid", "dev-1")
    # Then the private key is the owner's only, and RabbitMQ's lines name the public key
    assert code == 0
    assert mode(tmp_path / "dev-1.key") == 0o600
    public = (tmp_path / "dev-1.pub.pem").resolve()
    assert f"auth_oauth2.signing_keys.dev-1 = {public}" in out
    assert "auth_backends.1 = rabbit_auth_backend_oauth2" in out
    assert "auth_oauth2.resource_server_id = pandamq" in out
    # And a second init is refused unless forced
    code, _, err = run("tokens", "init", "--dir", str(tmp_path), "--kid", "dev-1")
    assert (
        code == 2
        and err
        == f"pandamq: error: {tmp_path} already has signing key dev-1; --force replaces it\n"
    )


def test_issue_writes_a_token_that_the_public_key_verifies(tmp_path: Path) -> None:
    # Given a signing key
    run("tokens", "init", "--dir", str(tmp_path))
    out_file = tmp_path / "pilot.token"
    # When a pilot token is issued for 5 minutes into a file
    code, out, _ = run(
        "tokens", "issue", "--pilot", "SITE_A", "--vhost", "prod", "--minutes", "5",
        "--out", str(out_file), "--dir", str(tmp_path),
    )  # fmt: skip
    # Then the file is 0600 and holds a token the public key verifies, for pilot.SITE_A
    assert code == 0 and "token for pilot.SITE_A (vhost prod, until " in out
    assert mode(out_file) == 0o600
    public = (tmp_path / f"{tokens.DEFAULT_KID}.pub.pem").read_bytes()
    claims = jwt.decode(
        out_file.read_text().strip(), public, algorithms=["RS256"], audience="pandamq"
    )
    assert claims["sub"] == "pilot.SITE_A" and 299 <= claims["exp"] - claims["iat"] <= 300
    assert claims["scope"].split() == scopes.scopes(scopes.pilot_grants("SITE_A"), "prod")
    # And `tokens show` reads it back
    code, shown, _ = run("tokens", "show", str(out_file), "--json")
    details = json.loads(shown)
    assert details["rabbitmq_user"] == "pilot.SITE_A" and details["vhosts"] == ["prod"]
    assert details["expired"] is False


def test_an_operator_token_may_follow_everyones_endings(tmp_path: Path) -> None:
    run("tokens", "init", "--dir", str(tmp_path))
    code, token, _ = run(
        "tokens", "issue", "--operator", "prod", "--vhost", "v", "--dir", str(tmp_path)
    )
    claims = jwt.decode(token.strip(), options={"verify_signature": False})
    assert code == 0 and claims["sub"] == "user.prod"
    assert "pandamq.read:v/pandamq.endings/*" in claims["scope"].split()


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--vhost", "v"], "give exactly one of --pilot SITE, --service NAME, --user NAME"),
        (["--user", "a", "--pilot", "b", "--vhost", "v"], "give exactly one of"),
        (["--user", "a b", "--vhost", "v"], "--user 'a b' must be 1-64 letters"),
        (["--user", "a", "--vhost", "v", "--dir", "/none"], "cannot read the signing key /none/"),
    ],
)  # fmt: skip
def test_issue_refuses_bad_input_in_one_line(args: list[str], error: str) -> None:
    code, _, err = run("tokens", "issue", *args)
    assert code == 2 and err.startswith(f"pandamq: error: {error}") and err.count("\n") == 1


def test_show_refuses_a_file_that_holds_no_token(tmp_path: Path) -> None:
    (tmp_path / "t").write_text("not a token")
    code, _, err = run("tokens", "show", str(tmp_path / "t"))
    assert code == 2 and "holds no JWT access token" in err and err.count("\n") == 1


def test_a_token_file_goes_with_no_certificate_and_no_password() -> None:
    with pytest.raises(ConfigError, match="two logins"):
        Settings.load(environ={}, broker_token_file="/t", tls_cert="/c", tls_key="/k")
    with pytest.raises(ConfigError, match="the token is the password"):
        Settings.load(environ={}, broker_token_file="/t", broker_url="amqp://u:p@h/v")
    assert Settings.load(environ={}, broker_token_file="/t", broker_url="amqps://h/v")
