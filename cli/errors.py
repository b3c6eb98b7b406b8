"""``pandamq errors``: PanDA's error list of failed attempts."""

from __future__ import annotations

import click

from broker.monitor.views import errors_page
from broker.monitor.window import DEFAULT_WINDOW, since
from broker.store.clock import now
from broker.store.engine import transaction
from cli.context import connection_options, database, settings
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
    start = since(window, now())
    with transaction(database(settings(ctx))) as conn:
        data = errors_page(conn, start, window, site)
    if as_json:
        print_json(data)
        return
    rows = [{**e, "example_jobs": " ".join(e["example_jobs"])} for e in data["errors"]]
    print_table(rows, COLUMNS)
