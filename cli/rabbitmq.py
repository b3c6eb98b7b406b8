"""``pandamq rabbitmq provision``: RabbitMQ's vhost, users and permissions for a deployment."""

from __future__ import annotations

import click

from broker.errors import BadInput
from broker.protocol import NAME_PATTERN
from broker.security import provisioning
from broker.store.engine import transaction
from broker.store.sites import list_sites
from cli.context import connection_options, database, settings
from cli.render import print_json


@click.group("rabbitmq")
def rabbitmq() -> None:
    """Set up RabbitMQ for pandamq."""


@rabbitmq.command("provision")
@click.option("--vhost", required=True, help="The deployment's vhost.")
@click.option(
    "--site",
    "sites",
    multiple=True,
    help="A site whose pilots get a user (default: the catalogue).",
)
@click.option(
    "--pilot",
    "pilots",
    multiple=True,
    help="A pilot with a user of its own, SITE:PILOT_ID: user pilot.SITE:PILOT_ID.",
)
@click.option("--user", "users", multiple=True, help="A person who submits jobs: user.NAME.")
@click.option(
    "--operator",
    "operators",
    multiple=True,
    help="A person who may follow everyone's jobs: user.NAME (give it the production_role too).",
)
@click.option(
    "--service",
    "services",
    multiple=True,
    default=("broker",),
    show_default=True,
    help="A service with full rights in the vhost: service.NAME.",
)
@click.option("--apply", "apply_", is_flag=True, help="Run the commands with rabbitmqctl.")
@click.option(
    "--definitions",
    "as_definitions",
    is_flag=True,
    help="Print RabbitMQ definitions (JSON) for `rabbitmqctl import_definitions` instead.",
)
@click.option("--node", help="The RabbitMQ node rabbitmqctl talks to (-n).")
@connection_options
@click.pass_context
def provision(
    ctx: click.Context,
    vhost: str,
    sites: tuple[str, ...],
    pilots: tuple[str, ...],
    users: tuple[str, ...],
    operators: tuple[str, ...],
    services: tuple[str, ...],
    apply_: bool,
    as_definitions: bool,
    node: str | None,
) -> None:
    """Print (or --apply) the rabbitmqctl commands for the vhost, users and permissions."""
    own = [_pilot(p) for p in pilots]
    chosen = list(sites) or ([] if own else _catalogue(ctx))
    if not chosen and not own:
        raise BadInput(
            "no site: name them with --site or --pilot, or add them to the catalogue first"
        )
    commands = provisioning.plan(vhost, chosen, users, services, operators, own)
    if as_definitions:
        print_json(provisioning.definitions(commands))
        return
    if not apply_:
        click.echo(provisioning.shell(commands, node))
        return
    people = set(users) - set(operators)
    ran = provisioning.apply(commands, provisioning.rabbitmqctl(node))
    click.echo(
        f"vhost {vhost}: {len(chosen)} site(s), {len(own)} pilot(s), {len(people)} submitter(s), "
        f"{len(operators)} operator(s), {len(services)} service(s) provisioned "
        f"({ran} rabbitmqctl commands)"
    )


def _catalogue(ctx: click.Context) -> list[str]:
    with transaction(database(settings(ctx))) as conn:
        return [site["name"] for site in list_sites(conn)]


def _pilot(value: str) -> tuple[str, str]:
    site, pilot_id = provisioning.parse_pilot(value)
    if not pilot_id or not NAME_PATTERN.match(site) or not NAME_PATTERN.match(pilot_id):
        raise BadInput(
            f"--pilot {value!r} must be SITE:PILOT_ID, each 1-64 letters, digits, '_', '.' or '-'"
        )
    return site, pilot_id
