"""Logging in to RabbitMQ with a JWT access token (``rabbitmq_auth_backend_oauth2``).

The token goes as the AMQP password; RabbitMQ checks its signature, expiry
and audience, names the user by its ``client_id`` claim or else its ``sub``,
and maps its scopes onto permissions. The token is read from
``broker_token_file`` at every connection, so a renewed file is used at the
next reconnect. RabbitMQ says only "login refused" to a client whatever was
wrong with a token; this module reads the token's claims (without checking
the signature, which only RabbitMQ can) to say which. Standard library only:
pilots import it.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from broker.errors import BrokerRefused, ConfigError

#: A scope RabbitMQ maps to a permission: ``<prefix><permission>:<vhost>/<name>[/<key>]``.
SCOPE = re.compile(r"^(?P<prefix>.*?)(?P<permission>configure|read|write):(?P<vhost>[^/]*)/")


#: How long a token file that holds no token is read again before that is an error: a
#: site's token renewer may be writing it in place (pandamq's own writes replace it whole).
REREAD_S = 1.0
REREAD_EVERY_S = 0.1


def read(path: str) -> str:
    """The token in ``path`` (whitespace around it dropped), or one clear error; a file
    that holds no token is read again for ``REREAD_S`` first."""
    deadline = time.monotonic() + REREAD_S
    while True:
        try:
            token = Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"broker_token_file {path!r}: cannot read it: {exc.strerror}"
            ) from exc
        try:
            claims_of(token, path)
        except ConfigError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(REREAD_EVERY_S)
            continue
        return token


def claims_of(token: str, path: str) -> dict[str, Any]:
    """The claims of a JWT, unverified; ``ConfigError`` if it is not a JWT."""
    parts = token.split(".")
    try:
        if len(parts) != 3:
            raise ValueError(f"{len(parts)} dot-separated parts, not 3")
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (ValueError, binascii.Error) as exc:
        raise ConfigError(f"broker_token_file {path!r} holds no JWT access token: {exc}") from exc
    if not isinstance(claims, dict):
        raise ConfigError(f"broker_token_file {path!r}: the token's claims are not an object")
    return claims


def user(claims: dict[str, Any]) -> str:
    """The RabbitMQ user a token logs in as: its ``client_id``, else its ``sub`` (3.10's rule)."""
    name = claims.get("client_id") or claims.get("sub")
    return str(name) if name else "token"


def expires(claims: dict[str, Any]) -> float | None:
    """When the token expires (seconds since the epoch); None if it never does."""
    exp = claims.get("exp")
    return float(exp) if isinstance(exp, int | float) else None


def vhosts(claims: dict[str, Any]) -> list[str]:
    """The vhost patterns the token's permission scopes name (for its audiences' prefixes)."""
    audiences = claims.get("aud", [])
    prefixes = {f"{a}." for a in ([audiences] if isinstance(audiences, str) else audiences)}
    found = []
    for scope in _scopes(claims):
        m = SCOPE.match(scope)
        if m and (not prefixes or m["prefix"] in prefixes):
            found.append(unquote(m["vhost"]))
    return sorted(set(found))


def _scopes(claims: dict[str, Any]) -> list[str]:
    scope = claims.get("scope", [])
    return scope.split() if isinstance(scope, str) else [str(s) for s in scope]


def _when(timestamp: float) -> str:
    return f"{datetime.datetime.fromtimestamp(timestamp, datetime.UTC):%Y-%m-%d %H:%M:%S} UTC"


def _matches(vhost: str, pattern: str) -> bool:
    return re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), vhost) is not None


#: RabbitMQ's replies to a token it refused: 403 at login (signature, expiry, audience),
#: 530 at opening the vhost (no scope for it).
LOGIN_REFUSED = 403
VHOST_REFUSED = 530
#: RabbitMQ 3.10 reads the login frame (the token, and the client's properties) with
#: at most this many bytes (``initial_frame_max``) and resets a connection that sends more.
LOGIN_FRAME_BYTES = 4096
#: What the login frame holds besides the token, about.
LOGIN_FRAME_OVERHEAD = 600


def explain(
    token: str, path: str, where: str, vhost: str, exc: BaseException
) -> BrokerRefused | None:
    """One line saying why RabbitMQ at ``where`` refused ``token`` (from ``path``), if it did."""
    code = getattr(exc, "reply_code", None)
    if (
        isinstance(exc, ConnectionResetError)
        and len(token) > LOGIN_FRAME_BYTES - LOGIN_FRAME_OVERHEAD
    ):
        return BrokerRefused(
            f"the message broker at {where} dropped the login with the token in {path}: "
            f"the token has {len(token)} bytes, and RabbitMQ takes a login of at most "
            f"{LOGIN_FRAME_BYTES} bytes; ask for a token with fewer scopes"
        )
    if code not in (LOGIN_REFUSED, VHOST_REFUSED):
        return None
    claims = claims_of(token, path)
    why = _why(claims, vhost, code)
    if why is None:
        return None
    return BrokerRefused(
        f"the message broker at {where} refused the token in {path} ({user(claims)}): {why}"
    )


def _why(claims: dict[str, Any], vhost: str, code: int) -> str | None:
    exp = expires(claims)
    if exp is not None and exp <= time.time():
        return f"it expired at {_when(exp)}; renew the file (`pandamq tokens issue`)"
    if code == VHOST_REFUSED:
        if any(_matches(vhost, v) for v in vhosts(claims)):
            return None  # the vhost is missing, or refused for another reason: said elsewhere
        named = ", ".join(vhosts(claims)) or "none"
        return (
            f"it has no scope for vhost {vhost!r} (its scopes name: {named}); "
            f"get a token for vhost {vhost!r}"
        )
    if not claims.get("aud") or not _scopes(claims):
        return "it has no aud or no scope claim, both of which RabbitMQ requires"
    return (
        "it is unexpired, so its signature or audience failed; "
        "check that it was signed by a key RabbitMQ trusts (auth_oauth2.signing_keys, "
        "jwks_url) and that its aud holds RabbitMQ's auth_oauth2.resource_server_id"
    )
