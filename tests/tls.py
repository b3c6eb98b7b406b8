"""A private RabbitMQ node that speaks TLS only to clients with certificates of its CA.

It also listens on plain TCP for guest (PLAIN), so that tests can look at
queues as an administrator; every pandamq process under test uses
``amqps://`` and logs in with its certificate (EXTERNAL, the CN is the user).
"""

from __future__ import annotations

import datetime
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from broker.security import certs, provisioning
from broker.settings import Settings
from tests.nodes import RabbitMQNode, free_port, private_dir

#: The most a deployment's provisioning may take: some thirty rabbitmqctl calls, each an
#: Erlang VM of its own (~0.5 s each on a quiet machine, seconds on a busy one).
PROVISIONING_S = 120.0
#: A loopback address the node also listens on, which its server certificate does not name.
UNNAMED_HOST = "127.0.0.2"


class TlsRabbitMQNode(RabbitMQNode):
    """A RabbitMQ node with a TLS listener, a CA of its own and certificate login."""

    def __init__(self) -> None:
        self.pki = private_dir("pandamq-pki-", "rabbitmq")
        self.ca_key, self.ca_cert = certs.make_ca("pandamq test CA")
        self.ca = certs.write(self.pki, certs.CA_NAME, self.ca_key, self.ca_cert).cert
        server = certs.write(
            self.pki,
            "server",
            *certs.issue(self.ca_key, self.ca_cert, "localhost", hosts=("localhost", "127.0.0.1")),
        )
        for path in self.pki.iterdir():
            shutil.chown(path, "rabbitmq", "rabbitmq")
        self.tls_port = free_port()
        super().__init__(
            extra_config="\n".join(
                [
                    f"listeners.ssl.default = 127.0.0.1:{self.tls_port}",
                    # The same port on a loopback address its certificate does not name.
                    f"listeners.ssl.unnamed = {UNNAMED_HOST}:{self.tls_port}",
                    f"ssl_options.cacertfile = {self.ca}",
                    f"ssl_options.certfile = {server.cert}",
                    f"ssl_options.keyfile = {server.key}",
                    "ssl_options.verify = verify_peer",
                    "ssl_options.fail_if_no_peer_cert = true",
                    "auth_mechanisms.1 = EXTERNAL",
                    "auth_mechanisms.2 = PLAIN",
                    "auth_mechanisms.3 = AMQPLAIN",
                    "ssl_cert_login_from = common_name",
                    "",
                ]
            ),
            plugins=("rabbitmq_auth_mechanism_ssl",),
        )

    def tls_url(self, vhost: str, host: str = "127.0.0.1") -> str:
        """The amqps:// URL of a vhost (no user: the certificate says who)."""
        return f"amqps://{host}:{self.tls_port}/{vhost}"

    def certificate(
        self, common_name: str, directory: Path, days: int = 30, age_days: int = 0
    ) -> certs.Issued:
        """A client certificate signed by this node's CA; ``age_days`` back-dates it."""
        start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=age_days)
        key, cert = certs.issue(self.ca_key, self.ca_cert, common_name, days=days, not_before=start)
        return certs.write(directory, common_name, key, cert)

    def provision(
        self, vhost: str, sites: list[str], users: list[str], operators: Sequence[str] = ()
    ) -> None:
        """Provision a deployment in ``vhost`` as ``pandamq rabbitmq provision --apply`` does,
        within ``PROVISIONING_S``."""
        deadline = time.monotonic() + PROVISIONING_S
        commands = provisioning.plan(vhost, sites, users, ["broker"], operators)
        provisioning.apply(commands, lambda command: self._run(command, deadline))

    def _run(self, command: list[str], deadline: float) -> tuple[int, str]:
        left = deadline - time.monotonic()
        assert left > 0, f"provisioning took more than {PROVISIONING_S} s"
        result = self.ctl(*command, check=False, timeout_s=left)
        return result.returncode, result.stderr + result.stdout

    def settings_for(
        self, base: Settings, vhost: str, issued: certs.Issued, **changes: object
    ) -> Settings:
        """``base`` with this node's TLS URL, CA and the given client certificate."""
        return base.replace(
            broker_url=self.tls_url(vhost),
            tls_ca=str(self.ca),
            tls_cert=str(issued.cert),
            tls_key=str(issued.key),
            **changes,
        )

    def remove(self) -> None:
        """Stop the node and delete its files and certificates."""
        super().remove()
        shutil.rmtree(self.pki, ignore_errors=True)
