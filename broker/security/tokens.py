"""A development token issuer: an RSA signing key and the short-lived JWT access
tokens it signs, in the form RabbitMQ's ``rabbitmq_auth_backend_oauth2`` takes.

The private key (``<kid>.key``, mode 0600) stays with whoever issues tokens;
RabbitMQ gets the public key (``<kid>.pub.pem``) and the key id. Tokens are
RS256, as most OIDC issuers (Indigo IAM among them) sign theirs. A site with
an issuer of its own needs none of this (docs/operations.md, "Token login").
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from broker.errors import ConfigError
from broker.security.scopes import RESOURCE_SERVER_ID
from broker.security.secrets import write_private

ALGORITHM = "RS256"
DEFAULT_KID = "pandamq-dev"
ISSUER = "pandamq development issuer"
#: Short, so that a token that leaks is soon worthless; a pilot's is renewed by its site.
TOKEN_MINUTES = 60

Key = rsa.RSAPrivateKey


@dataclass(frozen=True)
class SigningKey:
    """Where a signing key and its public half were written."""

    kid: str
    key: Path
    public: Path


def paths(directory: Path, kid: str) -> SigningKey:
    """The files of key ``kid`` in ``directory``."""
    return SigningKey(kid, directory / f"{kid}.key", directory / f"{kid}.pub.pem")


def new_key() -> Key:
    """A fresh 2048-bit RSA key."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def write(directory: Path, kid: str, key: Key) -> SigningKey:
    """Write the private key (mode 0600) and the public key of ``kid`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = paths(directory, kid)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(written.key, private)
    written.public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return written


def load(directory: Path, kid: str) -> Key:
    """The private signing key ``kid`` made by ``pandamq tokens init`` in ``directory``."""
    path = paths(directory, kid).key
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError(
            f"cannot read the signing key {path}: {exc.strerror}; make one with "
            "`pandamq tokens init`"
        ) from exc
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{path} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(f"{path}: the signing key must be an RSA key")
    return key


def issue(
    key: Key,
    kid: str,
    user: str,
    scopes: list[str],
    minutes: float = TOKEN_MINUTES,
    audience: str = RESOURCE_SERVER_ID,
    issued_at: float | None = None,
) -> str:
    """A signed access token for RabbitMQ user ``user`` (its ``sub``) with ``scopes``."""
    now = time.time() if issued_at is None else issued_at
    claims = {
        "iss": ISSUER,
        "sub": user,
        "aud": [audience],
        "scope": " ".join(scopes),
        "iat": int(now),
        "exp": int(now + minutes * 60),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": kid})


def rabbitmq_config(signing_key: SigningKey, resource_server_id: str = RESOURCE_SERVER_ID) -> str:
    """The ``rabbitmq.conf`` lines that make RabbitMQ take tokens signed by this key."""
    return "\n".join(
        [
            "# tokens first, then RabbitMQ's own users (certificates, passwords)",
            "auth_backends.1 = rabbit_auth_backend_oauth2",
            "auth_backends.2 = rabbit_auth_backend_internal",
            f"auth_oauth2.resource_server_id = {resource_server_id}",
            f"auth_oauth2.signing_keys.{signing_key.kid} = {signing_key.public}",
            f"auth_oauth2.default_key = {signing_key.kid}",
            f"auth_oauth2.algorithms.1 = {ALGORITHM}",
        ]
    )
