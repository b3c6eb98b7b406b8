"""``pandamq factory``: keep sites supplied with pilots through a batch system."""

from __future__ import annotations

import click

from broker.factory.factory import PilotFactory
from broker.factory.submitters import BATCH_SYSTEMS, open_submitter
from broker.settings import Settings
from broker.stopping import stop_on_signals
from broker.store.engine import open_engine
from cli.context import connection_options, database, settings, setup_logging

EVERY_SITE = "*"


def sites_setting(s: Settings) -> list[str]:
    """The sites ``factory_sites`` names (comma-separated); empty for ``*``."""
    names = [name.strip() for name in s.factory_sites.split(",") if name.strip()]
    return [] if names == [EVERY_SITE] else names


def new_factory(s: Settings) -> PilotFactory | None:
    """The factory ``serve all`` runs when ``factory_sites`` is set; else None."""
    if not s.factory_sites.strip():
        return None
    return PilotFactory(
        s, open_engine(s.database_url, create=False), open_submitter(s), sites_setting(s)
    )


@click.command()
@click.option(
    "--site",
    "sites",
    multiple=True,
    help="A site to serve; repeat for more (default: factory_sites, else every site).",
)
@click.option(
    "--batch-system",
    type=click.Choice(BATCH_SYSTEMS),
    default=None,
    help="Where pilots run (PANDAMQ_FACTORY_BATCH_SYSTEM, default local).",
)
@click.option("--once", is_flag=True, help="Run one cycle, print what it submitted, and exit.")
@click.option("--log-level", default=None, help="DEBUG, INFO, WARNING, ... (PANDAMQ_LOG_LEVEL).")
@connection_options
@click.pass_context
def factory(
    ctx: click.Context,
    sites: tuple[str, ...],
    batch_system: str | None,
    once: bool,
    log_level: str | None,
) -> None:
    """Submit pilots to the sites' batch system wherever jobs are activated, within limits."""
    s = settings(ctx, factory_batch_system=batch_system, log_level=log_level)
    setup_logging(s.log_level)
    pilot_factory = PilotFactory(s, database(s), open_submitter(s), sites or sites_setting(s))
    if once:
        click.echo(f"submitted {pilot_factory.cycle()} pilot(s)")
        # the sites it served are free at once for a running factory
        pilot_factory.duties.let_go()
    else:
        pilot_factory.run(stop_on_signals())
