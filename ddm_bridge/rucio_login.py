"""Logging in to Rucio with the settings' account: the bridge's backend and the pilot's
storage both do. Light: ``rucio.client`` is imported only when a client is made, and
nothing here imports SQL code (the pilot imports this module).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from broker.errors import DDMRefused
from broker.settings import Settings

#: The logins with a certificate (``rucio_cert``: the certificate, or the proxy).
X509_LOGINS = ("x509", "x509_proxy")


def connect(settings: Settings) -> Any:
    """A ``rucio.client.Client`` for the settings' server, account and login.

    A certificate that is not valid now, or one the server refuses in the TLS handshake,
    is ``DDMRefused`` with the reason, before or after Rucio's client (which says only
    "Cannot connect to the Rucio server") tried; an outage stays Rucio's error."""
    from rucio.client import Client
    from rucio.common.exception import ServerConnectionException

    if settings.rucio_auth_type in X509_LOGINS:
        _check_valid(settings)
    creds: dict[str, str] = {}
    if settings.rucio_auth_type == "userpass":
        creds = {"username": settings.rucio_username, "password": settings.rucio_password}
    elif settings.rucio_auth_type in ("x509", "x509_proxy"):
        creds = {"client_cert": settings.rucio_cert, "client_key": settings.rucio_key}
        if settings.rucio_auth_type == "x509_proxy":
            creds = {"client_proxy": settings.rucio_cert}
    try:
        client = Client(
            rucio_host=settings.rucio_host,
            auth_host=settings.rucio_auth_host or settings.rucio_host,
            account=settings.rucio_account,
            auth_type=settings.rucio_auth_type,
            creds=creds,
            ca_cert=settings.rucio_ca or None,
            timeout=settings.rucio_timeout_s,
        )
        client.whoami()
    except ServerConnectionException:
        refusal = _tls_refusal(settings)
        if refusal is None:
            raise
        raise DDMRefused(f"Rucio at {_auth_host(settings)} refused the login: {refusal}") from None
    return client


def _auth_host(settings: Settings) -> str:
    return settings.rucio_auth_host or settings.rucio_host


def _check_valid(settings: Settings) -> None:
    """``DDMRefused`` if the login's certificate has expired or is not valid yet."""
    from broker.security.certs import validity_problem

    problem = validity_problem(Path(settings.rucio_cert), "rucio_cert")
    if problem is not None:
        raise DDMRefused(f"cannot log in to Rucio as {settings.rucio_account}: {problem}; renew it")


def _tls_refusal(settings: Settings) -> str | None:
    """Why the Rucio login server refuses a TLS connection with the login's certificate (or
    is not trusted), found in a handshake of its own; None for another login or an outage."""
    url = urlsplit(_auth_host(settings))
    if settings.rucio_auth_type not in X509_LOGINS or url.scheme != "https" or not url.hostname:
        return None
    from broker.security import presented

    key = settings.rucio_key if settings.rucio_auth_type == "x509" else ""
    return presented.refused(
        url.hostname,
        url.port or 443,
        settings.rucio_ca or None,
        (settings.rucio_cert, key or None),
        settings.rucio_timeout_s,
    )
