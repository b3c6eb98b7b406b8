"""The idle mode of the lifecycle benchmark: how much CPU the services and pilots
use with nothing to do (no polling loop should burn it)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli.benchmark import processes

#: Time for every process to connect and settle before the measurement.
SETTLE_S = 5.0


def measure_idle(
    env: dict[str, str],
    work_dir: Path,
    brokers: list[processes.Process],
    sites: list[str],
    seconds: float,
    on_progress: Callable[[int, int], None],
) -> dict[str, Any]:
    """Start a DDM bridge, the web monitor and one pilot per site beside the brokers,
    let them settle, and read each one's CPU time over ``seconds`` of no work."""
    others = [
        processes.start("ddm", ["serve", "ddm"], env, work_dir, 0),
        processes.start("monitor", ["serve", "monitor", "--port", "0"], env, work_dir, 0),
        *(
            processes.start("pilot", ["pilot", "--site", s], env, work_dir, n)
            for n, s in enumerate(sites)
        ),
    ]
    everyone = brokers + others
    try:
        time.sleep(SETTLE_S)
        _check_alive(everyone)
        before = [p.cpu_seconds() for p in everyone]
        started = time.monotonic()
        while (left := started + seconds - time.monotonic()) > 0:
            on_progress(int(seconds - left), int(seconds))
            time.sleep(min(1.0, left))
        after = [p.cpu_seconds() for p in everyone]
        elapsed = time.monotonic() - started
        _check_alive(everyone)
    finally:
        for p in others:
            p.stop()
    percent: dict[str, float] = {}
    for p, b, a in zip(everyone, before, after, strict=True):
        percent[p.kind] = max(percent.get(p.kind, 0.0), 100 * (a - b) / elapsed)
    return {
        "mode": "idle",
        "brokers": len(brokers),
        "sites": len(sites),
        "idle_seconds": round(elapsed, 1),
        "idle_cpu_percent": {k: round(v, 2) for k, v in percent.items()},
    }


def _check_alive(everyone: list[processes.Process]) -> None:
    for p in everyone:
        if p.popen.poll() is not None:
            raise processes.ended(p)
