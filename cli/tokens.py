"""``pandamq tokens``: a development signing key and the short-lived access tokens
it signs, for RabbitMQ's oauth2 backend (``certs`` does the same for certificates)."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path

import click

from broker.errors import BadInput
from broker.protocol import NAME_PATTERN
from broker.security import identity, provisioning, scopes, secrets, token_login, tokens
from cli.render import print_json

DIR_OPTION = click.option(
    "--dir",
    "directory",
    envvar="PANDAMQ_TOKENS_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("pandamq-tokens"),
    show_default=True,
    help="Where the signing key lives (PANDAMQ_TOKENS_DIR).",
)
KID_OPTION = click.option(
    "--kid", default=tokens.DEFAULT_KID, show_default=True, help="The signing key's id."
)
RESOURCE_OPTION = click.option(
    "--resource-server-id",
    default=scopes.RESOURCE_SERVER_ID,
    show_default=True,
    help="RabbitMQ's auth_oauth2.resource_server_id: the audience and scope prefix.",
)


@click.group("tokens")
def tokens_group() -> None:
    """Make a development signing key, issue access tokens, show them."""


@tokens_group.command("init")
@DIR_OPTION
@KID_OPTION
@click.option("--force", is_flag=True, help="Replace the key (its tokens stop working).")
@RESOURCE_OPTION
def init(directory: Path, kid: str, force: bool, resource_server_id: str) -> None:
    """Make a signing key: KID.key (0600) and KID.pub.pem, and print RabbitMQ's lines."""
    _check_name("--kid", kid)
    if tokens.paths(directory, kid).key.exists() and not force:
        raise BadInput(f"{directory} already has signing key {kid}; --force replaces it")
    written = tokens.write(directory, kid, tokens.new_key())
    click.echo(f"signing key written: {written.key} (public key {written.public})")
    click.echo("rabbitmq.conf (with rabbitmq_auth_backend_oauth2 enabled):")
    click.echo(tokens.rabbitmq_config(_absolute(written), resource_server_id))


@tokens_group.command("rabbitmq-config")
@DIR_OPTION
@KID_OPTION
@RESOURCE_OPTION
@click.option(
    "--public-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where the public key is on the RabbitMQ host (default: its path here).",
)
def rabbitmq_config(
    directory: Path, kid: str, resource_server_id: str, public_key: Path | None
) -> None:
    """Print the rabbitmq.conf lines that make RabbitMQ take this key's tokens."""
    written = _absolute(tokens.paths(directory, kid))
    if public_key is None and not written.public.is_file():
        raise BadInput(f"no public key {written.public}; make one with `pandamq tokens init`")
    if public_key is not None:
        written = tokens.SigningKey(kid, written.key, public_key)
    click.echo(tokens.rabbitmq_config(written, resource_server_id))


def _absolute(written: tokens.SigningKey) -> tokens.SigningKey:
    return tokens.SigningKey(written.kid, written.key.resolve(), written.public.resolve())


@tokens_group.command("issue")
@click.option(
    "--pilot",
    "site",
    help="For one pilot (SITE:PILOT_ID: user pilot.SITE:PILOT_ID) or every pilot of SITE.",
)
@click.option("--service", help="For a service (broker, ddm): user service.NAME.")
@click.option("--user", help="For a person who submits jobs: user user.NAME.")
@click.option("--operator", help="For a person who follows everyone's jobs: user user.NAME.")
@click.option("--vhost", required=True, help="The RabbitMQ vhost the token is for.")
@click.option(
    "--minutes",
    type=click.IntRange(1),
    default=tokens.TOKEN_MINUTES,
    show_default=True,
    help="How long the token lasts.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the token here (mode 0600), for broker_token_file; default: print it.",
)
@DIR_OPTION
@KID_OPTION
@RESOURCE_OPTION
def issue(
    site: str | None,
    service: str | None,
    user: str | None,
    operator: str | None,
    vhost: str,
    minutes: int,
    out: Path | None,
    directory: Path,
    kid: str,
    resource_server_id: str,
) -> None:
    """Issue an access token with the scopes of a role, signed by the key in --dir."""
    name = _user(site, service, user, operator)
    grants = scopes.for_user(name, operator=operator is not None)
    token = tokens.issue(
        tokens.load(directory, kid),
        kid,
        name,
        scopes.scopes(grants, vhost, resource_server_id),
        minutes,
        resource_server_id,
    )
    if out is None:
        click.echo(token)
        return
    secrets.write_private(out, token.encode() + b"\n")
    ends = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=minutes)
    click.echo(f"token for {name} (vhost {vhost}, until {ends:%Y-%m-%d %H:%M} UTC) written: {out}")


def _user(site: str | None, service: str | None, user: str | None, operator: str | None) -> str:
    makers: dict[str, Callable[[str], str]] = {
        "--pilot": identity.pilot_user,
        "--service": identity.service_user,
        "--user": identity.submitter_user,
        "--operator": identity.submitter_user,
    }
    given = {"--pilot": site, "--service": service, "--user": user, "--operator": operator}
    chosen = [(flag, value) for flag, value in given.items() if value]
    if len(chosen) != 1:
        raise BadInput(
            "give exactly one of --pilot SITE, --service NAME, --user NAME, --operator NAME"
        )
    flag, value = chosen[0]
    if flag == "--pilot":
        return provisioning.pilot_user_of(value)
    _check_name(flag, value)
    return makers[flag](value)


def _check_name(flag: str, value: str) -> None:
    if not NAME_PATTERN.match(value):
        raise BadInput(f"{flag} {value!r} must be 1-64 letters, digits, '_', '.' or '-'")


@tokens_group.command("show")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(file: Path, as_json: bool) -> None:
    """Print a token's user, audience, scopes and expiry (its signature is RabbitMQ's to check)."""
    claims = token_login.claims_of(token_login.read(str(file)), str(file))
    exp = token_login.expires(claims)
    details = {
        "rabbitmq_user": token_login.user(claims),
        "issuer": str(claims.get("iss", "")),
        "audience": claims.get("aud", []),
        "vhosts": token_login.vhosts(claims),
        "scope": str(claims.get("scope", "")).split(),
        "expires": _iso(exp),
        "expired": exp is not None and exp <= datetime.datetime.now(datetime.UTC).timestamp(),
    }
    if as_json:
        print_json(details)
        return
    for key, value in details.items():
        click.echo(f"{key + ':':<15} {_shown(value)}")


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return " ".join(map(str, value))
    return str(value)


def _iso(timestamp: float | None) -> str:
    if timestamp is None:
        return "never"
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat()
