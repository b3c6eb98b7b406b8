"""``pandamq top``: a live terminal dashboard of sites x states, redrawn in place."""

from __future__ import annotations

import os
import select
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from sqlalchemy import Engine

from broker.monitor.render import USER_COLUMNS
from broker.monitor.views import dashboard
from broker.monitor.window import DEFAULT_WINDOW, since
from broker.stopping import stop_on_signals
from broker.store.clock import now
from broker.store.engine import transaction
from cli.context import connection_options, database, settings
from cli.render import table

FAILURE_COLUMNS = ["job_id", "attempt", "site", "error_code", "exit_code", "diagnostic"]
#: Failures listed under the table: few, so that it fits a terminal.
RECENT_FAILURES = 5
#: Users listed, the most queued first: few, so that it fits a terminal.
USERS_SHOWN = 10
#: Under the live table: how to leave it.
QUIT_HINT = "q or Ctrl-C to quit"
#: How often a wait between redraws looks at the keyboard and for a signal.
KEY_POLL_S = 0.1


@click.command()
@click.option(
    "--since",
    "window",
    default=DEFAULT_WINDOW,
    show_default=True,
    help="Count final jobs and failures of this window: 30m, 12h, 2d, ...",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.2),
    default=2.0,
    show_default=True,
    help="Seconds between redraws.",
)
@click.option("--once", is_flag=True, help="Draw once and exit (for scripts and logs).")
@connection_options
@click.pass_context
def top(ctx: click.Context, window: str, interval: float, once: bool) -> None:
    """Sites x states, running/queued ratio, error rate, users' queued and running jobs
    and recent failures, live."""
    engine = database(settings(ctx))
    since(window, now())  # a bad window is an error before the screen is taken
    if once:
        Console(width=200).print(_frame(engine, window))
        return
    stop = stop_on_signals()
    with (
        _quit_key(stop) as wait,
        Live(_frame(engine, window, QUIT_HINT), auto_refresh=False, screen=False) as live,
    ):
        while not wait(interval):
            live.update(_frame(engine, window, QUIT_HINT), refresh=True)


@contextmanager
def _quit_key(stop: threading.Event) -> Iterator[Callable[[float], bool]]:
    """A wait between redraws that ends early, True, on SIGTERM, Ctrl-C or (in a
    terminal) the ``q`` key; the terminal's mode is restored afterwards."""
    if not sys.stdin.isatty():
        yield stop.wait
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        yield lambda timeout_s: _wait_for_q(fd, stop, timeout_s)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _wait_for_q(fd: int, stop: threading.Event, timeout_s: float) -> bool:
    """True once ``q`` is typed or ``stop`` is set, False after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        ready, _, _ = select.select([fd], [], [], min(left, KEY_POLL_S))
        if ready and b"q" in os.read(fd, 64).lower():
            return True
    return True


def _frame(engine: Engine, window: str, hint: str | None = None) -> Group:
    with transaction(engine) as conn:
        data = dashboard(conn, since(window, now()), window)
    failures = data["recent_failures"][:RECENT_FAILURES]
    return Group(
        _sites(data, hint),
        table(data["users"][:USERS_SHOWN], USER_COLUMNS, "users (most queued first)"),
        table(failures, FAILURE_COLUMNS, "recent failures"),
    )


def _sites(data: dict[str, Any], hint: str | None) -> Table:
    states = [s for s in data["states"] if data["totals"]["counts"].get(s)]
    t = Table(
        title=f"pandamq: active jobs and jobs ended in the last {data['window']} "
        f"({now():%H:%M:%S} UTC)",
        header_style="bold",
        caption=hint,
    )
    for column in ["site", *states, "running/queued", "error rate"]:
        t.add_column(column, justify="left" if column == "site" else "right")
    for row in [*data["sites"], data["totals"]]:
        t.add_row(*_cells(row, states), style="bold" if row["site"] == "total" else None)
    return t


def _cells(row: dict[str, Any], states: list[str]) -> list[str]:
    rate = row["error_rate"]
    ratio = row["running_per_queued"]
    return [
        row["site"],
        *(str(row["counts"].get(s, "")) for s in states),
        "" if ratio is None else f"{ratio:.2f}",
        "" if rate is None else f"{rate:.1%}",
    ]
