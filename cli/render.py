"""Printing records as tables or JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table


def print_json(data: Any) -> None:
    """Indented JSON on stdout."""
    click.echo(json.dumps(data, indent=2, default=str))


def table(
    rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str | None = None
) -> Table:
    """A rich table of ``columns`` of ``rows``."""
    t = Table(title=title, header_style="bold")
    for column in columns:
        t.add_column(column)
    for row in rows:
        t.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    return t


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """A table on stdout; a note when there is nothing."""
    if not rows:
        click.echo("(none)")
        return
    Console(width=200).print(table(rows, columns))
