"""The monitor's HTML: plain server-rendered tables, every value escaped."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any
from urllib.parse import urlencode

STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: 0.8em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #eef; } td.text, th.text { text-align: left; }
td.failed { color: #b00; font-weight: bold; } td.finished { color: #070; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; }
.muted { color: #777; }
"""


def page(title: str, body: str, json_path: str, refresh_s: int | None = None) -> str:
    """A whole page: navigation, title, body, a link to the same data as JSON."""
    refresh = f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s else ""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'>{refresh}"
        f"<title>{escape(title)} - pandamq</title><style>{STYLE}</style></head><body>"
        "<nav><a href='/'>Sites</a><a href='/errors'>Errors</a>"
        "<a href='/datasets'>Datasets</a></nav>"
        f"<h1>{escape(title)}</h1>{body}"
        f"<p class='muted'><a href='{escape(json_path)}'>this page as JSON</a></p>"
        "</body></html>"
    )


def link(path: str, text: Any, **query: Any) -> str:
    """An escaped link; ``query`` values that are None are left out."""
    given = {k: v for k, v in query.items() if v is not None}
    href = path + ("?" + urlencode(given) if given else "")
    return f"<a href='{escape(href)}'>{escape(str(text))}</a>"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], text_columns: int = 1) -> str:
    """A table of already-escaped cells; the first ``text_columns`` align left."""
    head = "".join(
        f"<th class='{'text' if i < text_columns else ''}'>{escape(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='{'text' if i < text_columns else ''}'>{cell}</td>"
            for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def cell(value: Any) -> str:
    """A value for a table cell: escaped, empty for None."""
    return "" if value is None else escape(str(value))


def pre(data: Any) -> str:
    """Data as indented JSON in a ``pre`` block."""
    return f"<pre>{escape(json.dumps(data, indent=2, default=str))}</pre>"


def fields(record: dict[str, Any], names: Sequence[str]) -> str:
    """A two-column table of a record's fields (those set)."""
    rows = [(escape(n), cell(record.get(n))) for n in names if record.get(n) is not None]
    return table(["field", "value"], rows, text_columns=2)


def error_page(status: str, message: str) -> str:
    """A page that says what went wrong."""
    return page(status, f"<p class='failed'>{escape(message)}</p>", "/api/")
