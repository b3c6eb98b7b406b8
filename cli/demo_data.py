"""The demo's data: input files spread over the demo sites, so that about half
of the jobs must wait in ``assigned`` while their input moves to their site."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine, select

from broker.settings import Settings
from broker.store.engine import transaction
from broker.store.schema import subscriptions
from ddm_bridge import catalogue
from ddm_bridge.backends import open_backend

SCOPE = "demo"
#: Seconds each demo transfer takes, so the wait in ``assigned`` can be seen.
TRANSFER_DELAY_S = 1.0


def input_site(i: int, sites: tuple[str, ...]) -> str:
    """Where input file ``i`` is put: pairs of files alternate between sites."""
    return sites[(i // 2) % len(sites)]


def put_inputs(s: Settings, engine: Engine, run: str, count: int, sites: tuple[str, ...]) -> str:
    """Write and register one input file per job; the input dataset's name."""
    dataset = f"demo.{run}.input"
    scratch = Path(s.work_dir) / "inputs"
    scratch.mkdir(parents=True, exist_ok=True)
    backend = open_backend(s, engine)
    try:
        for i in range(count):
            path = scratch / input_name(run, i)
            path.write_text(f"input {i} of demo run {run}\n" * (i + 1))
            catalogue.add(backend, s.ddm_root, dataset, input_site(i, sites), SCOPE, [path])
    finally:
        backend.stop()
    return dataset


def input_name(run: str, i: int) -> str:
    """The file name of job ``i``'s input."""
    return f"demo-{run}-{i:03d}.in"


def subscription_summary(engine: Engine, since: datetime) -> str:
    """One line on the subscriptions made since the demo started."""
    with transaction(engine) as conn:
        stmt = select(subscriptions.c.state, subscriptions.c.files_done).where(
            subscriptions.c.created_at >= since
        )
        rows = list(conn.execute(stmt))
    states = Counter(r.state for r in rows)
    moved = sum(r.files_done for r in rows)
    summary = ", ".join(f"{n} {st}" for st, n in sorted(states.items())) or "none"
    return f"data movement: {len(rows)} subscription(s) ({summary}), {moved} file(s) copied"
