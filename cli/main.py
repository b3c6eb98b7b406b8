"""The ``pandamq`` command: one group, one module per area."""

from __future__ import annotations

import click

from cli import bench, control, db, dead_letters, demo, jobs, pilot, serve, sites, submit
from cli.context import Group


@click.group(cls=Group)
@click.option(
    "--config",
    envvar="PANDAMQ_CONFIG",
    type=click.Path(dir_okay=False),
    help="TOML settings file (PANDAMQ_CONFIG).",
)
@click.pass_context
def pandamq(ctx: click.Context, config: str | None) -> None:
    """pandamq: a pilot-based workload manager on a message broker."""
    ctx.ensure_object(dict)["config"] = config


for command in (
    bench.bench,
    control.kill,
    control.retry,
    dead_letters.dead_letters,
    db.db,
    demo.demo,
    jobs.jobs,
    jobs.job,
    pilot.pilot,
    serve.serve,
    sites.sites,
    submit.submit,
):
    pandamq.add_command(command)


def main() -> None:
    """Console-script entry point."""
    pandamq(prog_name="pandamq")
