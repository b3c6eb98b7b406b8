"""Put existing files into a dataset with replicas at a site (``pandamq datasets add/register``)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path

from broker.errors import BadInput
from broker.protocol import FILE_NAME_PATTERN, NAME_PATTERN
from broker.store.datasets import FileRecord
from ddm_bridge.backend import DDMBackend
from ddm_bridge.se import checksum, copy_verified, se_dir, se_path


def add(
    backend: DDMBackend, root: str, dataset: str, site: str, scope: str, paths: Sequence[Path]
) -> int:
    """Copy local files onto ``site``'s SE under ``scope`` and register them; how many new."""
    if not NAME_PATTERN.match(scope):
        raise BadInput(f"scope {scope!r} must be 1-64 letters, digits, '_', '.' or '-'")
    placed = []
    for path in paths:
        record = _record(scope, path.name, path)
        destination = se_path(root, site, scope, path.name)
        try:
            copy_verified(path, destination, checksum(path))
        except (OSError, ValueError) as exc:
            raise BadInput(f"cannot copy {path} to {destination}: {exc}") from exc
        placed.append((record, destination))
    return backend.register(dataset, site, placed, "input")


def register(backend: DDMBackend, root: str, dataset: str, site: str, paths: Sequence[Path]) -> int:
    """Register files already on ``site``'s SE (at ``<SE>/<scope>/<name>``); how many new."""
    base = se_dir(root, site).resolve()
    placed = []
    for path in paths:
        try:
            scope, name = path.resolve().relative_to(base).parts
        except ValueError as exc:
            raise BadInput(f"{path} is not a file at <SE>/<scope>/<name> under {base}") from exc
        placed.append((_record(scope, name, path), path.resolve()))
    return backend.register(dataset, site, placed, "input")


def _record(scope: str, name: str, path: Path) -> FileRecord:
    if not FILE_NAME_PATTERN.match(name) or not NAME_PATTERN.match(scope):
        raise BadInput(f"{scope}:{name} is not a valid DID (letters, digits, '_', '.' or '-')")
    try:
        found = checksum(path)
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror}") from exc
    return FileRecord(scope, name, str(uuid.uuid4()), found.size, found.adler32)
