"""Who a process is (its messages' user_id), and who may manage whose jobs."""

from __future__ import annotations

import getpass
from pathlib import Path

import pytest

from broker.errors import ConfigError, NotAllowed
from broker.messaging import tls
from broker.security import certs, identity
from broker.settings import Settings


def test_the_identity_is_the_certificates_cn_else_the_urls_user_else_the_local_user(
    tmp_path: Path,
) -> None:
    issued = certs.write(tmp_path, "p", *certs.issue(*certs.make_ca(), "pilot.SITE_A"))
    with_cert = Settings(
        broker_url="amqps://h:5671/v", tls_cert=str(issued.cert), tls_key=str(issued.key)
    )
    assert identity.of(with_cert) == "pilot.SITE_A"
    assert identity.of(Settings(broker_url="amqp://al%40ice:pw@h//")) == "al@ice"
    assert identity.of(Settings(broker_url="memory://")) == getpass.getuser()
    assert identity.site_of("pilot.SITE_A") == "SITE_A" and identity.site_of("user.a") is None


def test_the_production_role_manages_anyones_jobs() -> None:
    s = Settings(production_role="user.prod , user.admin")
    assert identity.may_manage(s, "user.a", "user.a") is None
    assert identity.may_manage(s, "user.prod", "user.a") is None
    assert identity.may_manage(s, "user.b", None) == (
        "user.b does not own it (with no recorded owner) and has no production role"
    )


def test_tls_options_verify_the_servers_host_name(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    options = tls.options(Settings(broker_url="amqps://rabbit.example.org:5671/v", tls_ca=str(ca)))
    assert options["server_hostname"] == "rabbit.example.org" and options["ca_certs"] == str(ca)


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"tls_cert": "c.pem"}, "tls_cert and tls_key go together"),
        ({"tls_ca": "/no/such/ca.pem"}, "tls_ca '/no/such/ca.pem': no such readable file"),
    ],
)
def test_missing_tls_files_are_one_clear_error(changes: dict[str, str], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        tls.options(Settings(broker_url="amqps://h/v", **changes))


def test_a_pilot_certificate_serves_its_own_site_only(tmp_path: Path) -> None:
    issued = certs.write(tmp_path, "p", *certs.issue(*certs.make_ca(), "pilot.SITE_A"))
    s = Settings(broker_url="amqps://h/v", tls_cert=str(issued.cert), tls_key=str(issued.key))
    identity.check_pilot_site(s, "SITE_A")
    with pytest.raises(NotAllowed, match=r"logs in as pilot\.SITE_A, which may serve site SITE_A"):
        identity.check_pilot_site(s, "SITE_B")


def test_a_pilots_own_identity_names_its_site_and_pilot_id() -> None:
    own = identity.pilot_user("SITE.A", "wn-1.x")
    assert own == "pilot.SITE.A:wn-1.x"
    assert (identity.site_of(own), identity.pilot_of(own)) == ("SITE.A", "wn-1.x")
    assert (identity.site_of("pilot.SITE.A"), identity.pilot_of("pilot.SITE.A")) == ("SITE.A", None)
    assert identity.pilot_of("user.a:b") is None


def test_a_pilot_with_its_own_certificate_is_the_pilot_it_names(tmp_path: Path) -> None:
    cn = identity.pilot_user("SITE_A", "A1")
    issued = certs.write(tmp_path, cn, *certs.issue(*certs.make_ca(), cn))
    s = Settings(broker_url="amqps://h/v", tls_cert=str(issued.cert), tls_key=str(issued.key))
    assert identity.check_pilot_site(s, "SITE_A") == "A1"
    assert identity.check_pilot_site(s, "SITE_A", "A1") == "A1"
    with pytest.raises(NotAllowed, match=r"logs in as pilot\.SITE_A:A1, which is pilot A1, not A2"):
        identity.check_pilot_site(s, "SITE_A", "A2")
