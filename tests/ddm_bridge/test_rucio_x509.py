"""Logging in to a real Rucio with a certificate, over HTTPS: the login that works, and the
certificates that do not (expired, of a CA Rucio does not trust) refused with the reason.

The server is this module's own (tests/rucio_server.py with ``ServerTls``): gunicorn
verifies client certificates against a CA of the test's, and Rucio's x509 login reads
the verified subject (tests/rucio_x509_app.py), as behind Apache's mod_ssl.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from sqlalchemy import create_engine

from broker.errors import DDMRefused, DDMUnavailable
from broker.protocol import FileInfo
from broker.security import certs, presented
from broker.settings import Settings
from ddm_bridge.backends.rucio import RucioDDM
from ddm_bridge.rucio_login import connect
from pilot_agent.storage import StagingError
from pilot_agent.storage.rucio import RucioStorage
from tests.nodes import free_port
from tests.rucio_server import RucioServer, ServerTls, rucio_server


class Pki:
    """The test's CA, which signed the server's certificate, and makes clients' ones."""

    def __init__(self, directory: Path, name: str = "rucio test CA") -> None:
        self.dir = directory
        self.key, self.cert = certs.make_ca(name)
        self.ca = certs.write(directory, certs.CA_NAME, self.key, self.cert).cert

    def client(self, name: str, days: int = 30, age_days: int = 0) -> tuple[certs.Issued, str]:
        """A client certificate and its subject as Rucio stores it (``CN=...,O=...``)."""
        start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=age_days)
        key, cert = certs.issue(self.key, self.cert, name, days=days, not_before=start)
        return certs.write(self.dir, f"{name}-{uuid.uuid4().hex[:6]}", key, cert), _dn(cert)


def _dn(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RucioServer]:
    """An HTTPS-only Rucio server that takes x509 logins of ``pki``'s certificates."""
    key, cert = certs.issue(pki.key, pki.cert, "localhost", hosts=("localhost", "127.0.0.1"))
    own = certs.write(pki.dir, "server", key, cert)
    with rucio_server(
        tmp_path_factory.mktemp("rucio-https"), ServerTls(own.cert, own.key, pki.ca)
    ) as s:
        yield s


def _login(url: str, pki: Pki, issued: certs.Issued, timeout_s: float = 20.0) -> Settings:
    """Settings that log in to the Rucio at ``url`` with ``issued``, as a fresh account (no
    token of it is cached on this machine, so that the login really happens)."""
    return Settings().replace(
        rucio_host=url,
        rucio_account=f"x509{uuid.uuid4().hex[:8]}",
        rucio_auth_type="x509",
        rucio_cert=str(issued.cert),
        rucio_key=str(issued.key),
        rucio_ca=str(pki.ca),
        rucio_timeout_s=timeout_s,
    )


def _account_for(server: RucioServer, settings: Settings, dn: str) -> Settings:
    server.add_x509_account(settings.rucio_account, dn)
    return settings


def test_a_certificate_rucio_maps_to_an_account_logs_in_over_https(
    server: RucioServer, pki: Pki
) -> None:
    # Given an account whose identity is the subject of a certificate of Rucio's CA
    issued, dn = pki.client("pandamq-bridge")
    settings = _account_for(server, _login(server.url, pki, issued), dn)
    # When the bridge logs in with it, Then Rucio knows it as that account
    assert server.url.startswith("https://")
    assert connect(settings).whoami()["account"] == settings.rucio_account


def test_an_expired_certificate_is_refused_at_login_with_one_clear_line(
    server: RucioServer, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an account whose certificate expired two days ago
    issued, dn = pki.client("pandamq-bridge", days=1, age_days=3)
    settings = _account_for(server, _login(server.url, pki, issued), dn)
    # Then Rucio's server itself refuses a connection that shows it
    refusal = presented.refused(
        "127.0.0.1", _port(server), str(pki.ca), (str(issued.cert), str(issued.key))
    )
    assert refusal is not None and "certificate expired" in refusal
    # When the bridge's backend logs in, Then it is a permanent refusal naming the file
    backend = RucioDDM(settings, create_engine("sqlite://"))
    with pytest.raises(DDMRefused, match=rf"rucio_cert {issued.cert} expired on .* UTC; renew it"):
        backend.close("some.dataset")
    # And a pilot's stage-in fails with the same reason
    monkeypatch.delenv("RUCIO_CONFIG", raising=False)
    storage = RucioStorage(settings.replace(work_dir=str(tmp_path)), "SITE_X509")
    wanted = FileInfo("user", "f.1", str(uuid.uuid4()), 1, "00000001")
    with pytest.raises(StagingError, match=r"cannot log in to Rucio at .*: DDMRefused: .*expired"):
        storage.stage_in([wanted], tmp_path)


def test_a_certificate_of_another_ca_is_refused_by_the_server_with_its_reason(
    server: RucioServer, pki: Pki, tmp_path: Path
) -> None:
    # Given an account whose certificate is valid, but signed by a CA Rucio does not trust
    other = Pki(tmp_path / "other", "another CA")
    issued, dn = other.client("pandamq-bridge")
    settings = _account_for(server, _login(server.url, pki, issued), dn)
    # When the backend logs in, Then the refusal is permanent and says what the server said
    backend = RucioDDM(settings, create_engine("sqlite://"))
    with pytest.raises(DDMRefused, match=r"refused the login: the server refused .*unknown ca"):
        backend.close("some.dataset")


def test_a_rucio_server_that_is_not_there_is_an_outage_not_a_refusal(pki: Pki) -> None:
    # Given a valid certificate and an HTTPS Rucio address where nothing listens
    issued, _ = pki.client("pandamq-bridge")
    settings = _login(f"https://127.0.0.1:{free_port()}", pki, issued, timeout_s=2.0)
    # When the backend logs in, Then it is recoverable: the bridge waits and asks again
    backend = RucioDDM(settings, create_engine("sqlite://"))
    with pytest.raises(DDMUnavailable, match="did not answer"):
        backend.close("some.dataset")


def _port(server: RucioServer) -> int:
    port = urlsplit(server.url).port
    assert port is not None
    return port
