"""TLS as a person meets it: a RabbitMQ node reached by a name its certificate does not
hold is refused in one line, by its right names it is trusted; ``pandamq certs check``
shows a server's chain, names and expiry, and fails for a mismatch or an expired chain."""

from __future__ import annotations

import datetime
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from broker.errors import BrokerRefused
from broker.messaging.connection import connect
from broker.security import certs
from broker.settings import Settings
from cli.main import pandamq
from tests.budget import TEARDOWN_S
from tests.nodes import RABBITMQ_START_S
from tests.tls import UNNAMED_HOST, TlsRabbitMQNode

pytestmark = [pytest.mark.services, pytest.mark.timeout(RABBITMQ_START_S + 60 + TEARDOWN_S)]


@pytest.fixture(scope="module")
def guest(
    tls_rabbitmq_node: TlsRabbitMQNode, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """Settings of a client of a new vhost that logs in as guest with a certificate."""
    node = tls_rabbitmq_node
    vhost = node.add_vhost().rsplit("/", 1)[1]
    issued = node.certificate("guest", tmp_path_factory.mktemp("certs"))
    yield node.settings_for(Settings(), vhost, issued)
    node.ctl("delete_vhost", vhost)


def check(node: TlsRabbitMQNode, guest: Settings, host: str, *extra: str) -> Result:
    """``pandamq certs check`` of the node's TLS port at ``host``, with guest's certificate."""
    args = ["certs", "check", f"amqps://{host}:{node.tls_port}/", "--ca", str(guest.tls_ca)]
    args += ["--cert", str(guest.tls_cert), "--key", str(guest.tls_key), *extra]
    return CliRunner(env={"PANDAMQ_CONFIG": None}).invoke(pandamq, args)


def test_a_name_the_servers_certificate_does_not_hold_is_refused_in_one_line(
    tls_rabbitmq_node: TlsRabbitMQNode, guest: Settings
) -> None:
    # Given a node whose certificate is for localhost and 127.0.0.1, listening on 127.0.0.2 too
    node = tls_rabbitmq_node
    vhost = guest.broker_url.rsplit("/", 1)[1]
    unnamed = guest.replace(broker_url=node.tls_url(vhost, UNNAMED_HOST))
    # When a client connects to it as 127.0.0.2
    with pytest.raises(BrokerRefused) as refused:
        connect(unnamed, timeout_s=5).release()
    # Then it refuses the server in one line that names the mismatch
    message = str(refused.value)
    assert message.startswith(
        f"the message broker at {node.tls_url(vhost, UNNAMED_HOST)} is not the host its "
        f"certificate names: its certificate is for localhost, 127.0.0.1, not {UNNAMED_HOST}; "
    )
    assert "\n" not in message
    # And by the names the certificate holds, the same node is trusted
    for host in ("localhost", "127.0.0.1"):
        connect(guest.replace(broker_url=node.tls_url(vhost, host)), timeout_s=5).release()


def test_certs_check_shows_the_chain_names_and_expiry_of_a_trusted_server(
    tls_rabbitmq_node: TlsRabbitMQNode, guest: Settings
) -> None:
    # When a person checks the node at a name its certificate holds
    result = check(tls_rabbitmq_node, guest, "localhost")
    # Then it shows the chain (the server's certificate, then its CA's), each one's issuer,
    # names and expiry, and trusts it
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"server localhost:{tls_rabbitmq_node.tls_port}\ncertificate 1 (the server)\n" in out
    assert "  subject:   CN=localhost,O=pandamq\n" in out
    assert "  issuer:    CN=pandamq test CA,O=pandamq\n" in out
    assert "  names:     localhost, 127.0.0.1\n" in out
    assert "UTC (in 365 days)\ncertificate 2\n  subject:   CN=pandamq test CA,O=pandamq\n" in out
    assert out.endswith("verdict: trusted: signed by a known CA, for this host\n")
    assert result.stderr == ""


def test_certs_check_fails_for_a_name_the_certificate_does_not_hold(
    tls_rabbitmq_node: TlsRabbitMQNode, guest: Settings
) -> None:
    # When a person checks the node as 127.0.0.2
    result = check(tls_rabbitmq_node, guest, UNNAMED_HOST, "--json")
    # Then the chain is shown, and the command fails in one line naming the mismatch
    assert result.exit_code == 1
    shown = json.loads(result.stdout)
    assert shown["trusted"] is False and shown["chain"][0]["names"] == "localhost, 127.0.0.1"
    mismatch = f"its certificate is for localhost, 127.0.0.1, not {UNNAMED_HOST}"
    assert shown["problems"] == [mismatch]
    port = tls_rabbitmq_node.tls_port
    assert result.stderr == f"pandamq: error: {UNNAMED_HOST}:{port}: {mismatch}\n"


class TlsServer:
    """A real TLS server on 127.0.0.1 with a given certificate: it completes handshakes."""

    def __init__(self, issued: certs.Issued) -> None:
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(issued.cert, issued.key)
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self.port = self._socket.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._socket.accept()
            except TimeoutError:
                continue
            try:
                with self._context.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._socket.close()


def server_with(tmp_path: Path, days: int, age_days: int) -> tuple[TlsServer, Path]:
    """A TLS server whose certificate (for 127.0.0.1) lasts ``days`` from ``age_days`` ago."""
    ca_key, ca_cert = certs.make_ca("check CA")
    ca = certs.write(tmp_path, "ca", ca_key, ca_cert).cert
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=age_days)
    key, cert = certs.issue(ca_key, ca_cert, "server", ("127.0.0.1",), days, not_before=start)
    return TlsServer(certs.write(tmp_path, "server", key, cert)), ca


@pytest.mark.parametrize(
    ("days", "age_days", "code", "says"),
    [
        (1, 10, 1, "expired on "),
        (15, 10, 0, "expires in 5 day(s), on "),
    ],
    ids=["expired", "expiring"],
)
def test_certs_check_fails_for_an_expired_chain_and_warns_before_expiry(
    tmp_path: Path, days: int, age_days: int, code: int, says: str
) -> None:
    # Given a TLS server whose certificate expired 9 days ago, or expires in 5 days
    server, ca = server_with(tmp_path, days, age_days)
    try:
        # When a person checks it
        args = ["certs", "check", f"127.0.0.1:{server.port}", "--ca", str(ca)]
        result = CliRunner(env={"PANDAMQ_CONFIG": None}).invoke(pandamq, args)
    finally:
        server.close()
    # Then the expired one fails, the expiring one is trusted with a warning
    assert result.exit_code == code, result.output
    assert says in result.stderr and result.stderr.count("\n") == 1
    if code:
        assert result.stderr.startswith(f"pandamq: error: 127.0.0.1:{server.port}: certificate 1")
    else:
        assert result.stderr.startswith("pandamq: warning: certificate 1 (CN=server,O=pandamq)")
