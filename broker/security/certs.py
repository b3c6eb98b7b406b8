"""A development certificate authority and the certificates it issues.

Every certificate's common name is the RabbitMQ user it logs in as
(``ssl_cert_login_from = common_name``): ``pilot.<site>``, ``service.<name>``
or ``user.<name>``, the names ``broker.security.identity`` understands.
Keys are written readable by their owner only.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from broker.errors import BadInput, ConfigError
from broker.security.secrets import SECRET_MODE, write_private

CA_NAME = "ca"
CA_DAYS = 3650
#: Long enough for a development deployment, short enough to be noticed.
CERT_DAYS = 365
KEY_MODE = SECRET_MODE
ORGANISATION = "pandamq"

Key = ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Issued:
    """Where a certificate and its key were written."""

    cert: Path
    key: Path


def new_key() -> Key:
    """A fresh P-256 key (small and fast; RabbitMQ and OpenSSL take it)."""
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _validity(days: int, not_before: datetime.datetime | None) -> tuple[datetime.datetime, ...]:
    start = not_before or datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    return start, start + datetime.timedelta(days=days)


def make_ca(common_name: str = "pandamq development CA") -> tuple[Key, x509.Certificate]:
    """A self-signed certificate authority."""
    key = new_key()
    start, end = _validity(CA_DAYS, None)
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue(
    ca_key: Key,
    ca_cert: x509.Certificate,
    common_name: str,
    hosts: tuple[str, ...] = (),
    days: int = CERT_DAYS,
    not_before: datetime.datetime | None = None,
) -> tuple[Key, x509.Certificate]:
    """A certificate for ``common_name`` signed by the CA; ``hosts`` make it a server's too."""
    key = new_key()
    start, end = _validity(days, not_before)
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + (
        [ExtendedKeyUsageOID.SERVER_AUTH] if hosts else []
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName(_alt_names(hosts)), False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _alt_names(hosts: tuple[str, ...]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def write(directory: Path, stem: str, key: Key, cert: x509.Certificate) -> Issued:
    """Write ``<stem>.pem`` and ``<stem>.key`` (mode 0600) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    issued = Issued(directory / f"{stem}.pem", directory / f"{stem}.key")
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(issued.key, pem)
    issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return issued


def load_ca(directory: Path) -> tuple[Key, x509.Certificate]:
    """The CA made by ``pandamq certs init`` in ``directory``."""
    cert = load_cert(directory / f"{CA_NAME}.pem")
    path = directory / f"{CA_NAME}.key"
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError(f"cannot read the CA key {path}: {exc.strerror}") from exc
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{path} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{path}: the CA key must be an elliptic-curve key")
    return key, cert


def load_cert(path: Path) -> x509.Certificate:
    """A PEM certificate, or one clear error."""
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        raise BadInput(f"cannot read certificate {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise BadInput(f"{path} is not a PEM certificate: {exc}") from exc


def validity_problem(path: Path, setting: str) -> str | None:
    """Why the certificate at ``path`` (the value of ``setting``) is not valid now, in one
    line; None if it is."""
    cert = load_cert(path)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    at = datetime.datetime.now(datetime.UTC)
    if end < at:
        return f"{setting} {path} expired on {end:%Y-%m-%d %H:%M} UTC"
    if start > at:
        return f"{setting} {path} is not valid before {start:%Y-%m-%d %H:%M} UTC"
    return None


def common_name(cert: x509.Certificate) -> str:
    """The certificate's CN: the RabbitMQ user it logs in as."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise BadInput(f"certificate {cert.subject.rfc4514_string()} has no common name")
    value = names[0].value
    return value if isinstance(value, str) else value.decode()


def describe(cert: x509.Certificate) -> dict[str, str]:
    """Subject, issuer, validity and login name of a certificate, for people."""
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "rabbitmq_user": common_name(cert),
        "expired": str(cert.not_valid_after_utc < datetime.datetime.now(datetime.UTC)).lower(),
    }
