"""The ``pandamq`` command: one group, one module per area."""

from __future__ import annotations

import click

from cli import (
    bench,
    bundle,
    certs,
    control,
    datasets,
    db,
    dead_letters,
    demo,
    errors,
    factory,
    jobs,
    pilot,
    rabbitmq,
    retry_rules,
    serve,
    sites,
    submit,
    tasks,
    tokens,
    top,
    watch,
)
from cli.context import Group, log_format_option


@click.group(cls=Group)
@click.option(
    "--config",
    envvar="PANDAMQ_CONFIG",
    type=click.Path(dir_okay=False),
    help="TOML settings file (PANDAMQ_CONFIG).",
)
@log_format_option
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
    retry_rules.retry_rules,
    submit.submit,
    tasks.tasks,
    tasks.task,
    datasets.datasets,
    datasets.dataset,
    certs.certs_group,
    tokens.tokens_group,
    rabbitmq.rabbitmq,
    errors.errors,
    top.top,
    factory.factory,
    bundle.pilot_bundle,
    watch.watch,
):
    pandamq.add_command(command)


def main() -> None:
    """Console-script entry point."""
    pandamq(prog_name="pandamq")
