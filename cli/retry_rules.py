"""``pandamq retry-rules``: what the service does when a job attempt fails, by error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from broker.retry_rules.rule_file import read_rules
from broker.store.engine import transaction
from broker.store.retry_rules import apply_rules, listing
from cli.context import connection_options, database, settings
from cli.render import print_json, print_table

COLUMNS = ["name", "source", "matches", "action", "passive", "overridden_by"]


@click.group("retry-rules", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@connection_options
@click.pass_context
def retry_rules(ctx: click.Context, as_json: bool) -> None:
    """List the retry rules in the order they are tried, or manage them with a subcommand."""
    if ctx.invoked_subcommand is None:
        _show(ctx, as_json)


@retry_rules.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@connection_options
@click.pass_context
def retry_rules_list(ctx: click.Context, as_json: bool) -> None:
    """List the retry rules in the order they are tried (defaults replaced: last)."""
    _show(ctx, as_json)


@retry_rules.command("apply")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@connection_options
@click.pass_context
def retry_rules_apply(ctx: click.Context, file: Path) -> None:
    """Make the operators' retry rules those of FILE (TOML or YAML), all or none; rules
    it does not name are removed, and applying it again changes nothing."""
    rules = read_rules(file)
    with transaction(database(settings(ctx))) as conn:
        outcome = apply_rules(conn, rules)
    for name, what in outcome.items():
        click.echo(f"retry rule {name} {what}")
    if not outcome:
        click.echo("no retry rule of operators: the defaults apply")


def _show(ctx: click.Context, as_json: bool) -> None:
    with transaction(database(settings(ctx))) as conn:
        rows = listing(conn)
    if as_json:
        print_json(rows)
    else:
        print_table([_readable(r) for r in rows], COLUMNS)


def _readable(row: dict[str, Any]) -> dict[str, Any]:
    """What a rule matches in a few words, and its action with its number."""
    n = row["max_attempts"]
    return {
        **row,
        "action": f"{row['action']} {n}" if n is not None else row["action"],
        "passive": "passive" if row["passive"] else "",
        "overridden_by": row["overridden_by"] or "",
    }
