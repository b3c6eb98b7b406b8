"""Real files on the local DDM's storage elements, registered for tests."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Engine, select

from broker.settings import Settings
from broker.store import datasets
from broker.store.clock import iso_times, now
from broker.store.datasets import FileRecord
from broker.store.engine import transaction
from broker.store.schema import replicas, subscriptions
from ddm_bridge.adder import Adder
from ddm_bridge.backends.local import LocalDDM
from ddm_bridge.se import Checksum, checksum, copy_verified, se_path

SCOPE = "data"


def put_file(
    settings: Settings, engine: Engine, dataset: str, site: str, content: bytes
) -> FileRecord:
    """Write a new file on ``site``'s SE and register it in ``dataset`` with its replica."""
    name = f"in.{uuid.uuid4().hex[:10]}.dat"
    path = se_path(settings.ddm_root, site, SCOPE, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    found = checksum(path)
    record = FileRecord(SCOPE, name, str(uuid.uuid4()), found.size, found.adler32)
    with transaction(engine) as conn:
        datasets.register(conn, dataset, [(record, str(path))], site, now())
    return record


def copy_by_hand(
    settings: Settings, engine: Engine, record: FileRecord, source: str, destination: str
) -> None:
    """Copy a file from ``source``'s SE to ``destination``'s outside any subscription
    (as an operator might), and register the replica."""
    target = se_path(settings.ddm_root, destination, record.scope, record.name)
    origin = se_path(settings.ddm_root, source, record.scope, record.name)
    copy_verified(origin, target, Checksum(record.size, record.adler32))
    with transaction(engine) as conn:
        (file_id, _) = datasets.files_by_did(conn, [record.did])[record.did]
        datasets.add_replicas(conn, destination, {file_id: str(target)}, now())


def sites_with(engine: Engine, record: FileRecord) -> set[str]:
    """Sites with an available replica of ``record``."""
    with transaction(engine) as conn:
        (file_id, _) = datasets.files_by_did(conn, [record.did])[record.did]
        stmt = select(replicas.c.site).where(
            replicas.c.file_id == file_id, replicas.c.state == datasets.AVAILABLE
        )
        return {r.site for r in conn.execute(stmt)}


def dataset_states(engine: Engine, *names: str) -> set[str]:
    """The states of the datasets ``names`` (``missing`` for one that does not exist)."""
    with transaction(engine) as conn:
        listed = {d["name"]: d["state"] for d in datasets.list_datasets(conn)}
    return {listed.get(n, "missing") for n in names}


def subscriptions_to(engine: Engine, site: str) -> list[dict[str, Any]]:
    """Every subscription to ``site``."""
    with transaction(engine) as conn:
        stmt = (
            select(subscriptions).where(subscriptions.c.site == site).order_by(subscriptions.c.id)
        )
        return [iso_times(dict(r)) for r in conn.execute(stmt).mappings()]


def adder_pass(settings: Settings, engine: Engine) -> int:
    """One pass of a bridge's Adder on the local DDM: the reports it dealt with."""
    backend = LocalDDM(settings, engine)
    try:
        return Adder(settings, engine, backend, f"test-bridge-{uuid.uuid4().hex[:8]}").step(now())
    finally:
        backend.stop()
