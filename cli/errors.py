"""``pandamq errors``: PanDA's error list of failed attempts."""

from __future__ import annotations

import click

from broker.monitor.window import DEFAULT_WINDOW, parse_window
from cli.context import client, connection_options
from cli.render import print_json, print_table

COLUMNS = ["count", "error_family", "error_code", "exit_code", "diagnostic", "example_jobs"]


@click.command()
@click.option(
    "--since",
    "window",
    default=DEFAULT_WINDOW,
    show_default=True,
    help="How far back: 30m, 12h, 2d, ...",
)
@click.option("--site", help="Only failures at this site.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@connection_options
@click.pass_context
def errors(ctx: click.Context, window: str, site: str | None, as_json: bool) -> None:
    """Failed attempts grouped by error code and diagnostic, with counts and example jobs."""
    parse_window(window)  # a bad window is refused before anything is sent
    data = client(ctx).errors(window, site)
    if as_json:
        print_json(data)
        return
    rows = [{**e, "example_jobs": " ".join(e["example_jobs"])} for e in data["errors"]]
    print_table(rows, COLUMNS)
