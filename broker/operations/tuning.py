"""Task tuning: the memory and walltime a task's jobs ask for, from what its finished
jobs used.

Each measure is the nearest-rank percentile ``p`` of the finished jobs' values (the
smallest value that at least ``p`` % of them do not exceed); the memory asked is
that of the peaks with ``memory_margin`` more, the walltime that of the wall times
with ``walltime_margin`` more and at least ``MIN_WALLTIME_S``. CPU time and output
size are measured the same way and recorded for people. Pure functions: the
service (``broker.operations.scouting``) reads the measures and applies the tuning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from broker.api import TaskTuning

#: The least walltime a tuned job asks for: a scout's few seconds say little of the rest.
MIN_WALLTIME_S = 60


@dataclass(frozen=True)
class Measure:
    """What one finished job's payload used (None: not reported)."""

    peak_rss_mb: int | None = None
    wall_time_s: float | None = None
    cpu_time_s: float | None = None
    output_bytes: int | None = None


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile (0 < p <= 100) of ``values`` (not empty)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def tune(
    measures: Sequence[Measure], p: float, memory_margin: float, walltime_margin: float
) -> TaskTuning | None:
    """The tuning from the finished jobs' ``measures``; None when there are none."""
    if not measures:
        return None
    peak = _at(measures, "peak_rss_mb", p)
    wall = _at(measures, "wall_time_s", p)
    cpu = _at(measures, "cpu_time_s", p)
    output = _at(measures, "output_bytes", p)
    return TaskTuning(
        memory_mb=None if peak is None else max(1, math.ceil(peak * (1 + memory_margin))),
        walltime_s=None
        if wall is None
        else max(MIN_WALLTIME_S, math.ceil(wall * (1 + walltime_margin))),
        jobs=len(measures),
        percentile=p,
        peak_rss_mb=None if peak is None else int(peak),
        wall_time_s=wall,
        cpu_time_s=cpu,
        output_bytes=None if output is None else int(output),
    )


def record(tuning: TaskTuning) -> dict[str, Any]:
    """A tuning as stored on the task and shown by ``pandamq task ID``."""
    return asdict(tuning)


def _at(measures: Sequence[Measure], name: str, p: float) -> Any:
    values = [getattr(m, name) for m in measures if getattr(m, name) is not None]
    return percentile(values, p) if values else None
