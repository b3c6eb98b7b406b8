"""What a TLS server presents: its certificate chain, the names its certificate is for,
their expiry, and whether a client verifying it as pandamq does would trust it.

The handshake is the standard library's ``ssl`` on the same OpenSSL as every
pandamq connection, so what this shows is what a client meets; certificates
are read with ``cryptography``. No pyOpenSSL (docs/operations.md, "Checking a
server").
"""

from __future__ import annotations

import _ssl
import datetime
import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass

from cryptography import x509

from broker.errors import BrokerRefused, BrokerUnavailable, ConfigError

#: A certificate expiring within this many days is warned about.
WARN_DAYS = 30


@dataclass(frozen=True)
class Presented:
    """A server's chain (its own certificate first) and the verdict of a pandamq client."""

    host: str
    port: int
    chain: list[x509.Certificate]
    #: Why a pandamq client would refuse this server (None: it would trust it).
    refusal: str | None


def fetch(
    host: str,
    port: int,
    ca: str | None,
    client: tuple[str, str] | None = None,
    timeout_s: float = 10.0,
) -> Presented:
    """Connect to ``host:port``, read the chain it presents, and verify it as a client would
    (against ``ca``, or the system's CAs, and ``host``)."""
    chain = chain_of(host, port, client, timeout_s)
    try:
        _handshake(host, port, _context(ca, client, verify=True), timeout_s)
    except ssl.SSLCertVerificationError as exc:
        return Presented(host, port, chain, _refusal(exc, host, chain))
    except ssl.SSLError:
        # The chain verified; the server refused our certificate (or none): not its problem.
        pass
    return Presented(host, port, chain, None)


def refused(
    host: str,
    port: int,
    ca: str | None,
    client: tuple[str, str | None],
    timeout_s: float = 10.0,
) -> str | None:
    """Why ``host:port`` and a client showing ``client``'s certificate cannot talk over
    TLS, in one line: the server is not trusted (against ``ca``: a file, a directory of
    CA certificates, or the system's) or it refused the certificate (its TLS alert). None
    if they can talk, or if the server cannot be reached at all (an outage, no refusal).

    One request is sent after the handshake: in TLS 1.3 a server's refusal of the
    client's certificate arrives with the first answer, not in the handshake."""
    context = _context(ca, client, verify=True)
    try:
        with (
            _connected(host, port, timeout_s) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            tls.sendall(b"HEAD / HTTP/1.0\r\n\r\n")
            tls.recv(1)
    except ssl.SSLCertVerificationError as exc:
        return f"the server's certificate is not trusted: {exc.verify_message}"
    except ssl.SSLError as exc:
        reason = str(exc.reason or exc).lower().replace("_", " ")
        return f"the server refused the certificate {client[0]}: {reason}"
    except (BrokerUnavailable, OSError):
        return None
    return None


def chain_of(
    host: str, port: int, client: tuple[str, str] | None = None, timeout_s: float = 10.0
) -> list[x509.Certificate]:
    """The chain ``host:port`` presents, read without verifying it."""
    return _chain(host, port, _context(None, client, verify=False), timeout_s)


def _context(ca: str | None, client: tuple[str, str | None] | None, verify: bool) -> ssl.SSLContext:
    """A client's context; ``ca`` is a file or a directory of CA certificates."""
    if not verify:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    elif ca and os.path.isdir(ca):
        context = ssl.create_default_context(capath=ca)
    else:
        context = ssl.create_default_context(cafile=ca)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if client is not None:
        try:
            context.load_cert_chain(*client)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"cannot load the client certificate {client[0]}: {exc}") from exc
    return context


def _handshake(host: str, port: int, context: ssl.SSLContext, timeout_s: float) -> None:
    with _connected(host, port, timeout_s) as raw, context.wrap_socket(raw, server_hostname=host):
        pass


def _chain(
    host: str, port: int, context: ssl.SSLContext, timeout_s: float
) -> list[x509.Certificate]:
    try:
        with (
            _connected(host, port, timeout_s) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            return [x509.load_der_x509_certificate(der) for der in _ders(tls)]
    except ssl.SSLError as exc:
        raise BrokerRefused(
            f"{host}:{port} ended the TLS handshake ({exc.reason or exc}); "
            "if it wants a client certificate, give one with --cert and --key"
        ) from exc


def _ders(tls: ssl.SSLSocket) -> list[bytes]:
    """The DER certificates the server sent, its own first.

    ``get_unverified_chain`` is public from Python 3.13 and on the socket's
    ``_sslobj`` from 3.10; without it, only the server's own certificate.
    """
    sslobj = getattr(tls, "_sslobj", None)
    unverified = getattr(tls, "get_unverified_chain", None) or getattr(
        sslobj, "get_unverified_chain", None
    )
    if unverified is not None:
        return [_der(c) for c in unverified()]
    own = tls.getpeercert(binary_form=True)
    return [own] if own else []


def _der(cert: object) -> bytes:
    if isinstance(cert, bytes):
        return cert
    der: bytes = cert.public_bytes(_ssl.ENCODING_DER)  # type: ignore[attr-defined]
    return der


def _connected(host: str, port: int, timeout_s: float) -> socket.socket:
    try:
        return socket.create_connection((host, port), timeout=timeout_s)
    except OSError as exc:
        raise BrokerUnavailable(f"cannot reach {host}:{port}: {exc.strerror or exc}") from exc


def _refusal(exc: ssl.SSLCertVerificationError, host: str, chain: list[x509.Certificate]) -> str:
    if chain and not matches(chain[0], host):
        return mismatch(host, chain[0])
    return str(exc.verify_message)


def mismatch(host: str, cert: x509.Certificate) -> str:
    """One line: the certificate is for other names than ``host``."""
    held = ", ".join(names(cert)) or "no host name at all"
    return f"its certificate is for {held}, not {host}"


def names(cert: x509.Certificate) -> list[str]:
    """The host names and IP addresses a server certificate is for (its SAN)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    dns = san.get_values_for_type(x509.DNSName)
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return [*dns, *ips]


def matches(cert: x509.Certificate, host: str) -> bool:
    """Whether ``host`` (a name or an IP address) is one the certificate is for."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return any(_name_matches(pattern, host) for pattern in names(cert))
    return str(ip) in names(cert)


def _name_matches(pattern: str, host: str) -> bool:
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == host


def days_left(cert: x509.Certificate, at: datetime.datetime | None = None) -> float:
    """Days until the certificate expires (negative: expired that long ago)."""
    at = at or datetime.datetime.now(datetime.UTC)
    return (cert.not_valid_after_utc - at).total_seconds() / 86400
