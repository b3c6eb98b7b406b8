"""TLS for ``amqps://`` connections: options for py-amqp, and one clear line
for each way a TLS connection can fail (bad or untrusted certificates,
a plain client on a TLS port)."""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from broker.errors import BrokerRefused, ConfigError, PandaMQError
from broker.settings import Settings, broker_nodes


def options(settings: Settings, host: str | None = None) -> dict[str, Any]:
    """py-amqp's ``ssl`` options: verify the server against ``tls_ca`` and its hostname
    (``host``, the node connected to; by default the first node's of ``broker_url``)."""
    _readable(settings)
    host = host or urlsplit(broker_nodes(settings.broker_url)[0]).hostname or "localhost"
    opts: dict[str, Any] = {"cert_reqs": ssl.CERT_REQUIRED, "server_hostname": host}
    if settings.tls_ca:
        opts["ca_certs"] = settings.tls_ca
    if settings.tls_cert:
        opts["certfile"] = settings.tls_cert
        opts["keyfile"] = settings.tls_key
    return opts


def _readable(settings: Settings) -> None:
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise ConfigError("tls_cert and tls_key go together: set both or neither")
    for name in ("tls_ca", "tls_cert", "tls_key"):
        path = getattr(settings, name)
        if path and not os.access(path, os.R_OK):
            raise ConfigError(f"{name} {path!r}: no such readable file")


#: OpenSSL's verify codes for a certificate that is not for the host connected to.
NAME_MISMATCH = frozenset({62, 64})  # X509_V_ERR_HOSTNAME_MISMATCH, _IP_ADDRESS_MISMATCH


def explain(exc: BaseException, settings: Settings, where: str) -> PandaMQError | None:
    """One line saying why a TLS connection to ``where`` failed; None if not a TLS failure."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_code in NAME_MISMATCH:
        return BrokerRefused(
            f"the message broker at {where} is not the host its certificate names: "
            f"{_mismatch(settings, where, exc)}; connect by a name the certificate holds, "
            "or give the server a certificate for this name (pandamq certs issue --server)"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return BrokerRefused(
            f"the certificate of the message broker at {where} is not trusted: "
            f"{exc.verify_message}; check tls_ca and that the URL's host is in the certificate"
        )
    if isinstance(exc, ssl.SSLError):
        return BrokerRefused(
            f"the message broker at {where} ended the TLS handshake ({_reason(exc)}): "
            f"{_client_cert_problem(settings)}"
        )
    return None


def _mismatch(settings: Settings, where: str, exc: ssl.SSLCertVerificationError) -> str:
    """The names the server's certificate holds, read in a second, unverified handshake."""
    from broker.security import presented

    parts = urlsplit(where)
    host = parts.hostname or "localhost"
    client = (
        (settings.tls_cert, settings.tls_key) if settings.tls_cert and settings.tls_key else None
    )
    try:
        chain = presented.chain_of(host, parts.port or 5671, client)
    except PandaMQError:
        chain = []
    return presented.mismatch(host, chain[0]) if chain else str(exc.verify_message)


def _client_cert_problem(settings: Settings) -> str:
    """What is wrong with our certificate, as far as we can tell from here."""
    if not settings.tls_cert:
        return "it wants a client certificate; set tls_cert and tls_key"
    from broker.security.certs import validity_problem

    problem = validity_problem(Path(settings.tls_cert), "tls_cert")
    if problem is not None:
        return problem
    return f"it refused tls_cert {settings.tls_cert}; check that a CA the broker trusts signed it"


def plain_on_tls_hint(url: str, exc: BaseException) -> str:
    """What to check when a plain ``amqp://`` connection is dropped at once."""
    dropped = isinstance(exc, ConnectionResetError) or "closed" in str(exc)
    if url.startswith("amqp://") and dropped:
        return "; if that port is a TLS listener, use amqps:// with tls_ca"
    return ""


def _reason(exc: ssl.SSLError) -> str:
    reason = exc.reason or exc.strerror or str(exc)
    return str(reason).lower().replace("_", " ")
