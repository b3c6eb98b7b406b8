"""Time windows people type: ``12h``, ``30m``, ``2d``, ``90s``."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from broker.errors import BadInput

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PATTERN = re.compile(r"^(\d+)([smhd])$")

#: PanDA's error list and monitor look this far back by default.
DEFAULT_WINDOW = "12h"


def parse_window(text: str) -> timedelta:
    """``12h`` as a timedelta; ``BadInput`` for anything else."""
    match = _PATTERN.match(text.strip())
    if match is None:
        raise BadInput(f"time window {text!r} must be a number and s, m, h or d, e.g. 12h")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def since(text: str, now: datetime) -> datetime:
    """The start of the window ``text`` that ends ``now``."""
    return now - parse_window(text)
