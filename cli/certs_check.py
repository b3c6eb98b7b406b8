"""``pandamq certs check URL``: the chain a TLS server presents, its names and expiry,
and whether a pandamq client would trust it; and warnings of certificates about to expire."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import click
from cryptography import x509

from broker.errors import BadInput, CertificateProblem
from broker.security import presented
from broker.settings import broker_nodes
from cli.context import settings as load_settings
from cli.render import print_json

#: RabbitMQ's TLS port, when the URL gives none.
AMQPS_PORT = 5671

WARN_OPTION = click.option(
    "--warn-days",
    envvar="PANDAMQ_CERTS_WARN_DAYS",
    type=click.IntRange(0),
    default=presented.WARN_DAYS,
    show_default=True,
    help="Warn about a certificate that expires within this many days (PANDAMQ_CERTS_WARN_DAYS).",
)


def warn_if_expiring(cert: x509.Certificate, what: str, warn_days: int) -> None:
    """One warning line on stderr if ``cert`` has expired or expires within ``warn_days``."""
    line = expiry_warning(cert, what, warn_days)
    if line:
        click.echo(f"pandamq: warning: {line}", err=True)


def expiry_warning(cert: x509.Certificate, what: str, warn_days: int) -> str | None:
    """What to warn about ``cert``'s expiry, if anything."""
    left = presented.days_left(cert)
    when = f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    if left < 0:
        return f"{what} expired on {when}"
    if left < warn_days:
        return f"{what} expires in {left:.0f} day(s), on {when} (renew it)"
    return None


@click.command("check")
@click.argument("url")
@click.option("--ca", envvar="PANDAMQ_TLS_CA", help="CA certificates to verify with (tls_ca).")
@click.option("--cert", envvar="PANDAMQ_TLS_CERT", help="Client certificate (tls_cert).")
@click.option("--key", envvar="PANDAMQ_TLS_KEY", help="Its private key (tls_key).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@WARN_OPTION
@click.pass_context
def check(
    ctx: click.Context,
    url: str,
    ca: str | None,
    cert: str | None,
    key: str | None,
    as_json: bool,
    warn_days: int,
) -> None:
    """Connect to a TLS server (amqps://HOST[:PORT], HOST:PORT) and show its chain, names
    and expiry; exit 1 if a certificate expired or a client would refuse the server."""
    s = load_settings(ctx)
    ca, cert, key = ca or s.tls_ca, cert or s.tls_cert, key or s.tls_key
    if bool(cert) != bool(key):
        raise BadInput("--cert and --key go together: give both or neither")
    host, port = _address(url)
    found = presented.fetch(host, port, ca, (cert, key) if cert and key else None)
    problems = _problems(found, warn_days)
    if as_json:
        print_json(_as_dict(found, problems))
    else:
        _print(found, warn_days)
    if problems:
        raise CertificateProblem(f"{host}:{port}: " + "; ".join(problems))


def _address(url: str) -> tuple[str, int]:
    first = broker_nodes(url)[0] if url.strip() else ""
    parts = urlsplit(first if "://" in first else f"amqps://{first}")
    if parts.scheme != "amqps" or not parts.hostname:
        raise BadInput(f"{url!r}: give amqps://HOST[:PORT][/VHOST] or HOST:PORT")
    try:
        return parts.hostname, parts.port or AMQPS_PORT
    except ValueError as exc:
        raise BadInput(f"{url!r}: {exc}") from exc


def _problems(found: presented.Presented, warn_days: int) -> list[str]:
    expired = [
        _who(n, c) + f" expired on {c.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        for n, c in enumerate(found.chain)
        if presented.days_left(c) < 0
    ]
    if found.chain and not presented.matches(found.chain[0], found.host):
        return [*expired, presented.mismatch(found.host, found.chain[0])]
    return [*expired, *([found.refusal] if found.refusal and not expired else [])]


def _who(n: int, cert: x509.Certificate) -> str:
    return f"certificate {n + 1} ({cert.subject.rfc4514_string()})"


def _print(found: presented.Presented, warn_days: int) -> None:
    click.echo(f"server {found.host}:{found.port}")
    for n, cert in enumerate(found.chain):
        click.echo(f"certificate {n + 1}{' (the server)' if n == 0 else ''}")
        for label, value in _rows(cert).items():
            click.echo(f"  {label + ':':<10} {value}")
        if presented.days_left(cert) >= 0:  # an expired one is the command's error
            warn_if_expiring(cert, _who(n, cert), warn_days)
    verdict = found.refusal or "trusted: signed by a known CA, for this host"
    click.echo(f"verdict: {verdict}")


def _rows(cert: x509.Certificate) -> dict[str, str]:
    left = presented.days_left(cert)
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "names": ", ".join(presented.names(cert)) or "-",
        "expires": f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC "
        + (f"(in {left:.0f} days)" if left >= 0 else f"(expired {-left:.0f} days ago)"),
    }


def _as_dict(found: presented.Presented, problems: list[str]) -> dict[str, Any]:
    return {
        "host": found.host,
        "port": found.port,
        "chain": [
            {**_rows(c), "not_after": c.not_valid_after_utc.isoformat()} for c in found.chain
        ],
        "trusted": found.refusal is None,
        "problems": problems,
    }
