"""``pandamq certs``: a development CA and the certificates it signs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from broker.errors import BadInput
from broker.protocol import NAME_PATTERN
from broker.security import certs, identity, provisioning
from cli.certs_check import WARN_OPTION, check, warn_if_expiring
from cli.render import print_json

DIR_OPTION = click.option(
    "--dir",
    "directory",
    envvar="PANDAMQ_CERTS_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("pandamq-certs"),
    show_default=True,
    help="Where the CA and certificates live (PANDAMQ_CERTS_DIR).",
)


@click.group("certs")
def certs_group() -> None:
    """Make a development CA, issue certificates, show them."""


@certs_group.command("init")
@DIR_OPTION
@click.option(
    "--force", is_flag=True, help="Replace an existing CA (its certificates stop working)."
)
def init(directory: Path, force: bool) -> None:
    """Make a development certificate authority: ca.pem and ca.key (0600)."""
    if (directory / f"{certs.CA_NAME}.pem").exists() and not force:
        raise BadInput(f"{directory} already has a CA; --force replaces it")
    key, cert = certs.make_ca()
    issued = certs.write(directory, certs.CA_NAME, key, cert)
    click.echo(f"CA written: {issued.cert} (key {issued.key})")


@certs_group.command("issue")
@click.option(
    "--pilot",
    "site",
    help="For one pilot, SITE:PILOT_ID (user pilot.SITE:PILOT_ID), or every pilot of SITE "
    "(user pilot.SITE).",
)
@click.option("--service", help="For a service (broker, ddm): user service.NAME.")
@click.option("--user", help="For a person who submits jobs: user user.NAME.")
@click.option("--server", help="For RabbitMQ itself: its host name, which clients verify.")
@click.option("--host", "hosts", multiple=True, help="Another name or IP of the server.")
@click.option("--days", type=click.IntRange(1), default=certs.CERT_DAYS, show_default=True)
@DIR_OPTION
@WARN_OPTION
def issue(
    site: str | None,
    service: str | None,
    user: str | None,
    server: str | None,
    hosts: tuple[str, ...],
    days: int,
    directory: Path,
    warn_days: int,
) -> None:
    """Issue a key and certificate signed by the CA in --dir."""
    name = _common_name(site, service, user, server)
    ca_key, ca_cert = certs.load_ca(directory)
    warn_if_expiring(ca_cert, f"the CA {directory / certs.CA_NAME}.pem", warn_days)
    key, cert = certs.issue(
        ca_key, ca_cert, name, hosts=(server, *hosts) if server else (), days=days
    )
    issued = certs.write(directory, name, key, cert)
    click.echo(f"certificate for {name} written: {issued.cert} (key {issued.key})")
    warn_if_expiring(cert, str(issued.cert), warn_days)


def _common_name(
    site: str | None, service: str | None, user: str | None, server: str | None
) -> str:
    makers: dict[str, Callable[[str], str]] = {
        "--service": identity.service_user,
        "--user": identity.submitter_user,
        "--server": str,
    }
    given = {"--pilot": site, "--service": service, "--user": user, "--server": server}
    chosen = [(flag, value) for flag, value in given.items() if value]
    if len(chosen) != 1:
        raise BadInput(
            "give exactly one of --pilot SITE, --service NAME, --user NAME, --server HOST"
        )
    flag, value = chosen[0]
    if flag == "--pilot":
        return provisioning.pilot_user_of(value)
    if not NAME_PATTERN.match(value):
        raise BadInput(f"{flag} {value!r} must be 1-64 letters, digits, '_', '.' or '-'")
    return makers[flag](value)


@certs_group.command("show")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@WARN_OPTION
def show(file: Path, as_json: bool, warn_days: int) -> None:
    """Print a certificate's subject, issuer, validity and RabbitMQ user."""
    cert = certs.load_cert(file)
    details = certs.describe(cert)
    if as_json:
        print_json(details)
    else:
        for key, value in details.items():
            click.echo(f"{key + ':':<15} {value}")
    warn_if_expiring(cert, str(file), warn_days)


certs_group.add_command(check)
