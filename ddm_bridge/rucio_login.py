"""Logging in to Rucio with the settings' account: the bridge's backend and the pilot's
storage both do. Light: ``rucio.client`` is imported only when a client is made, and
nothing here imports SQL code (the pilot imports this module).
"""

from __future__ import annotations

from typing import Any

from broker.settings import Settings


def connect(settings: Settings) -> Any:
    """A ``rucio.client.Client`` for the settings' server, account and login."""
    from rucio.client import Client

    creds: dict[str, str] = {}
    if settings.rucio_auth_type == "userpass":
        creds = {"username": settings.rucio_username, "password": settings.rucio_password}
    elif settings.rucio_auth_type in ("x509", "x509_proxy"):
        creds = {"client_cert": settings.rucio_cert, "client_key": settings.rucio_key}
        if settings.rucio_auth_type == "x509_proxy":
            creds = {"client_proxy": settings.rucio_cert}
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
    return client
