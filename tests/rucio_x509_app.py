"""Rucio's REST application behind gunicorn's TLS, with the client's DN where Rucio reads it.

Rucio's x509 login (``GET /auth/x509``) takes the client's subject from the WSGI
variable ``SSL_CLIENT_S_DN``, which Apache's mod_ssl sets in production. gunicorn
checks the client certificate against its CA (``--ca-certs``, ``--cert-reqs``) and
sets no such variable, so this wrapper sets it from the verified certificate of the
connection, in mod_ssl's (RFC 2253) form: ``CN=name,O=organisation``. A connection
without a certificate gets none, and Rucio answers "Cannot get DN".

gunicorn in the Rucio environment loads it (``rucio_x509_app:application``); it
imports only the standard library and Rucio.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from rucio.web.rest.flaskapi.v1.main import application as rucio_application

#: The short names mod_ssl writes for the attributes of a subject.
_SHORT = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "domainComponent": "DC",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
}


def subject_dn(peer: dict[str, Any]) -> str:
    """The subject of ``ssl.SSLSocket.getpeercert()``'s answer, last attribute first."""
    parts = [
        f"{_SHORT.get(name, name)}={value}"
        for rdn in peer.get("subject", ())
        for name, value in rdn
    ]
    return ",".join(reversed(parts))


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Rucio's application, with ``SSL_CLIENT_S_DN`` of a verified client certificate."""
    sock = environ.get("gunicorn.socket")
    peer = sock.getpeercert() if hasattr(sock, "getpeercert") else None
    if peer:
        environ["SSL_CLIENT_S_DN"] = subject_dn(peer)
    return rucio_application(environ, start_response)  # type: ignore[no-any-return]
