"""``pandamq pilot``: run a pilot for a site."""

from __future__ import annotations

import click

from broker.errors import BrokerUnavailable
from broker.security import identity
from broker.stopping import stop_on_signals
from cli.context import connection_options, settings, setup_logging
from pilot_agent.agent import Pilot, Slot


@click.command()
@click.option("--site", required=True, help="The site whose jobs this pilot runs.")
@click.option("--cores", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--memory",
    "memory_mb",
    type=click.IntRange(min=1),
    default=2000,
    show_default=True,
    help="Memory of the slot in MB.",
)
@click.option(
    "--walltime",
    "walltime_s",
    type=click.IntRange(min=1),
    default=None,
    help="Seconds the slot lasts; jobs needing longer are not taken (default: no limit).",
)
@click.option(
    "--max-jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Exit after this many jobs (default: run until stopped).",
)
@click.option(
    "--heartbeat-interval",
    type=click.FloatRange(min=0.1),
    default=None,
    help="Seconds between heartbeats while a payload runs (default 1800).",
)
@click.option("--log-level", default=None, help="DEBUG, INFO, WARNING, ... (PANDAMQ_LOG_LEVEL).")
@click.option(
    "--max-idle",
    type=click.FloatRange(min=0.1),
    default=None,
    help="Exit after this many seconds without a job (default: wait for ever).",
)
@click.option(
    "--pilot-id",
    default=None,
    help="The pilot's name (default: its identity's, else node, pid, random).",
)
@connection_options
@click.pass_context
def pilot(
    ctx: click.Context,
    site: str,
    cores: int,
    memory_mb: int,
    walltime_s: int | None,
    max_jobs: int | None,
    heartbeat_interval: float | None,
    log_level: str | None,
    max_idle: float | None,
    pilot_id: str | None,
) -> None:
    """Pull jobs from SITE's queues and run them, until --max-jobs, --max-idle or SIGTERM."""
    s = settings(ctx, heartbeat_interval_s=heartbeat_interval, log_level=log_level)
    setup_logging(s.log_level, s.log_format)
    own = identity.check_pilot_site(s, site, pilot_id)
    slot = Slot(site, cores, memory_mb, walltime_s)
    agent = Pilot(s, slot, max_jobs, pilot_id or own, max_idle)
    ran = agent.run(stop_on_signals())
    click.echo(f"pilot {agent.pilot_id} ran {ran} job(s)")
    if not agent.connected:
        raise BrokerUnavailable("the pilot never reached the message broker")
