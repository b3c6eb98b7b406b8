"""TLS for ``amqps://`` connections: options for py-amqp, and one clear line
for each way a TLS connection can fail (bad or untrusted certificates,
a plain client on a TLS port)."""

from __future__ import annotations

import os
import ssl
from typing import Any
from urllib.parse import urlsplit

from broker.errors import BrokerRefused, ConfigError, PandaMQError
from broker.settings import Settings


def options(settings: Settings) -> dict[str, Any]:
    """py-amqp's ``ssl`` options: verify the server against ``tls_ca`` and its hostname."""
    _readable(settings)
    host = urlsplit(settings.broker_url).hostname or "localhost"
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


def explain(exc: BaseException, where: str) -> PandaMQError | None:
    """One line saying why a TLS connection to ``where`` failed; None if not a TLS failure."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return BrokerRefused(
            f"the certificate of the message broker at {where} is not trusted: "
            f"{exc.verify_message}; check tls_ca and that the URL's host is in the certificate"
        )
    if isinstance(exc, ssl.SSLError):
        return BrokerRefused(
            f"TLS with the message broker at {where} failed: {_reason(exc)}; "
            "check that tls_cert is signed by a CA the broker trusts and has not expired"
        )
    return None


def plain_on_tls_hint(url: str) -> str:
    """What to check when a plain ``amqp://`` connection is dropped at once."""
    if url.startswith("amqp://"):
        return "; if that port is a TLS listener, use amqps:// with tls_ca"
    return ""


def _reason(exc: ssl.SSLError) -> str:
    reason = exc.reason or str(exc)
    return reason.lower().replace("_", " ")
