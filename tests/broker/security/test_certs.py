"""Certificates: a CA, certificates named for RabbitMQ users, keys only their owner reads."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from broker.errors import BadInput
from broker.security import certs
from cli.main import pandamq


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(pandamq, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_issued_certificates_are_signed_by_the_ca_and_name_the_rabbitmq_user(
    tmp_path: Path,
) -> None:
    # Given a CA made by `pandamq certs init`
    assert run("certs", "init", "--dir", str(tmp_path))[0] == 0
    # When certificates are issued for a site's pilots, a service and a person
    for flag, name in (("--pilot", "SITE_A"), ("--service", "broker"), ("--user", "alice")):
        assert run("certs", "issue", flag, name, "--dir", str(tmp_path))[0] == 0
    # Then each is signed by the CA, its CN is the RabbitMQ user, its key is 0600
    ca = certs.load_cert(tmp_path / "ca.pem")
    for user in ("pilot.SITE_A", "service.broker", "user.alice"):
        cert = certs.load_cert(tmp_path / f"{user}.pem")
        cert.verify_directly_issued_by(ca)
        assert certs.common_name(cert) == user
        assert stat.S_IMODE((tmp_path / f"{user}.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "ca.key").stat().st_mode) == 0o600


def test_show_prints_subject_issuer_and_expiry(tmp_path: Path) -> None:
    run("certs", "init", "--dir", str(tmp_path))
    run("certs", "issue", "--pilot", "SITE_A", "--days", "10", "--dir", str(tmp_path))
    code, out, _ = run("certs", "show", str(tmp_path / "pilot.SITE_A.pem"))
    assert code == 0
    assert "subject:        CN=pilot.SITE_A,O=pandamq" in out
    assert "issuer:         CN=pandamq development CA,O=pandamq" in out
    assert "rabbitmq_user:  pilot.SITE_A" in out and "expired:        false" in out


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["issue", "--pilot", "A", "--user", "b"], "give exactly one of --pilot SITE"),
        (["issue", "--pilot", "a b"], "--pilot 'a b' must be 1-64 letters"),
        (["issue", "--pilot", "A"], "cannot read certificate"),
        (["show", "nowhere.pem"], "cannot read certificate nowhere.pem"),
        (["check", "http://rabbit"], "'http://rabbit': give amqps://HOST[:PORT][/VHOST]"),
        (["check", "amqps://rabbit:99999"], "'amqps://rabbit:99999': Port out of range"),
    ],
)
def test_bad_requests_are_one_line_exit_2(tmp_path: Path, args: list[str], error: str) -> None:
    code, _, err = run("certs", *args, *(["--dir", str(tmp_path)] if args[0] == "issue" else []))
    assert code == 2 and err.startswith(f"pandamq: error: {error}") and err.count("\n") == 1


def test_init_keeps_an_existing_ca(tmp_path: Path) -> None:
    run("certs", "init", "--dir", str(tmp_path))
    code, _, err = run("certs", "init", "--dir", str(tmp_path))
    assert code == 2 and "already has a CA; --force replaces it" in err


def test_a_file_that_is_not_a_certificate_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "x.pem").write_text("hello")
    with pytest.raises(BadInput, match="is not a PEM certificate"):
        certs.load_cert(tmp_path / "x.pem")


def test_a_key_replaces_a_world_readable_file_and_is_0600(tmp_path: Path) -> None:
    # Given a CA, and a world-readable file where alice's key goes
    run("certs", "init", "--dir", str(tmp_path))
    old = tmp_path / "user.alice.key"
    old.write_text("old")
    old.chmod(0o644)
    # When her certificate is issued
    assert run("certs", "issue", "--user", "alice", "--dir", str(tmp_path))[0] == 0
    # Then her key replaced the file, readable by its owner only, and no partial file is left
    assert stat.S_IMODE(old.stat().st_mode) == 0o600 and b"PRIVATE KEY" in old.read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_issue_and_show_warn_before_a_certificate_expires(tmp_path: Path) -> None:
    # Given a CA, When a certificate is issued for 10 days
    run("certs", "init", "--dir", str(tmp_path))
    code, _, err = run("certs", "issue", "--user", "bob", "--days", "10", "--dir", str(tmp_path))
    # Then issue and show warn that it expires within the 30 days of the default threshold
    cert = tmp_path / "user.bob.pem"
    warning = f"pandamq: warning: {cert} expires in 10 day(s), on "
    assert code == 0 and err.startswith(warning) and err.count("\n") == 1
    code, _, err = run("certs", "show", str(cert))
    assert code == 0 and err.startswith(warning)
    # And a threshold below its days left says nothing
    assert run("certs", "show", str(cert), "--warn-days", "5")[2] == ""
    # And a year's certificate is not warned about
    code, _, err = run("certs", "issue", "--user", "carol", "--dir", str(tmp_path))
    assert code == 0 and err == ""


def test_check_of_a_server_that_does_not_answer_is_one_line_exit_1() -> None:
    code, _, err = run("certs", "check", "127.0.0.1:1")
    assert code == 1 and err.startswith("pandamq: error: cannot reach 127.0.0.1:1: ")
    assert err.count("\n") == 1
