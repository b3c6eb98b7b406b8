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


def test_issue_makes_a_certificate_for_one_pilot_of_a_site(tmp_path: Path) -> None:
    run("certs", "init", "--dir", str(tmp_path))
    code, out, _ = run("certs", "issue", "--pilot", "SITE.A:wn-1", "--dir", str(tmp_path))
    assert code == 0, out
    _, shown, _ = run("certs", "show", str(tmp_path / "pilot.SITE.A:wn-1.pem"))
    assert "rabbitmq_user:  pilot.SITE.A:wn-1" in shown


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["issue", "--pilot", "A", "--user", "b"], "give exactly one of --pilot SITE"),
        (["issue", "--pilot", "a b"], "--pilot 'a b' must be 1-64 letters"),
        (["issue", "--pilot", "A:b c"], "--pilot 'A:b c' must be 1-64 letters"),
        (["issue", "--pilot", "A"], "cannot read certificate"),
        (["show", "nowhere.pem"], "cannot read certificate nowhere.pem"),
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
