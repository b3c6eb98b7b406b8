"""``pandamq dead-letters``: what the services refused, and why."""

from __future__ import annotations

from typing import Any

import click

from broker import topology
from broker.messaging.connection import broker_errors, connect
from broker.messaging.dead_letters import QUEUE_HEADER
from cli.context import connection_options, settings
from cli.render import print_json, print_table

BODY_CHARS = 120


@click.command("dead-letters")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@connection_options
@click.pass_context
def dead_letters(ctx: click.Context, limit: int, as_json: bool) -> None:
    """List messages in the dead-letter queue (they stay there)."""
    s = settings(ctx)
    with connect(s) as connection, broker_errors(connection, "reading dead letters"):
        queue = topology.Topology(s.queue_type).dead_letter_queue().bind(connection.channel())
        queue.declare()
        taken: list[Any] = []
        while len(taken) < limit and (message := queue.get()) is not None:
            taken.append(message)
        rows = [_row(m) for m in taken]
        for message in taken:
            message.requeue()
    if as_json:
        print_json(rows)
    else:
        print_table(rows, ["queue", "reason", "body"])


def _row(message: Any) -> dict[str, Any]:
    headers = message.headers or {}
    body = message.body if isinstance(message.body, bytes) else str(message.body).encode()
    text = body.decode("utf-8", "replace")
    return {
        "queue": headers.get(QUEUE_HEADER, ""),
        "reason": headers.get(topology.REASON_HEADER, "(set by RabbitMQ: see x-death)"),
        "body": text if len(text) <= BODY_CHARS else text[:BODY_CHARS] + "...",
    }
