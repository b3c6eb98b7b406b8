"""Files, datasets and replicas in SQL: what data exists and which site has it.

A file is named by its DID, ``scope:name``, and carries a GUID, a size and an
adler32 checksum. A dataset is an ordered list of files (kind ``input``,
``dispatch``, ``output`` or ``log``); a replica is a copy of a file at a site's
storage element (SE), ``available`` once it is there and verified.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Connection, and_, func, insert, select, update

from broker.errors import BadInput, NameTaken, NotFound
from broker.protocol import split_did
from broker.store.clock import iso_times
from broker.store.keys import pairs_in
from broker.store.schema import dataset_contents, datasets, files, replicas

DATASET_KINDS = ("input", "dispatch", "output", "log")
OPEN, CLOSED = "open", "closed"
AVAILABLE = "available"
#: Rows per statement when a query takes a list of keys.
CHUNK = 500

T = TypeVar("T")


@dataclass(frozen=True)
class FileRecord:
    """One file: its DID parts, GUID, size in bytes and adler32 (8 hex digits)."""

    scope: str
    name: str
    guid: str
    size: int
    adler32: str

    @property
    def did(self) -> str:
        """``scope:name``."""
        return f"{self.scope}:{self.name}"


def _dids_in(conn: Connection, keys: Iterable[tuple[str, str]]) -> ColumnElement[bool]:
    """Files whose (scope, name) is one of ``keys``."""
    return pairs_in(conn, files.c.name, files.c.scope, ((name, scope) for scope, name in keys))


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """``items`` in slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True)
class Placement:
    """Files put into one dataset, each with a replica at its path on ``site``'s SE
    (without a site the files are only catalogued)."""

    dataset: str
    placed: Sequence[tuple[FileRecord, str]]
    site: str | None = None
    kind: str = "input"
    task_id: str | None = None


def ensure_dataset(
    conn: Connection,
    name: str,
    kind: str,
    now: datetime,
    task_id: str | None = None,
    site: str | None = None,
) -> None:
    """Create an open dataset unless it exists; a dataset keeps the kind it was made with."""
    ensure_datasets(conn, {name: (kind, task_id, site)}, now)


def ensure_datasets(
    conn: Connection, wanted: dict[str, tuple[str, str | None, str | None]], now: datetime
) -> None:
    """:func:`ensure_dataset` for several datasets, name → (kind, task id, site)."""
    for kind, _, _ in wanted.values():
        if kind not in DATASET_KINDS:
            raise BadInput(f"dataset kind must be one of {', '.join(DATASET_KINDS)}, got {kind!r}")
    found: dict[str, str] = {}
    for part in chunks(list(wanted)):
        stmt = select(datasets.c.name, datasets.c.kind).where(datasets.c.name.in_(part))
        found |= {r.name: r.kind for r in conn.execute(stmt)}
    for name, kind in found.items():
        if kind != wanted[name][0]:
            raise BadInput(f"dataset {name!r} is a {kind} dataset, not {wanted[name][0]}")
    new = [
        {
            "name": name,
            "kind": kind,
            "state": OPEN,
            "task_id": task_id,
            "site": site,
            "created_at": now,
            "modified_at": now,
        }
        for name, (kind, task_id, site) in wanted.items()
        if name not in found
    ]
    if new:
        conn.execute(insert(datasets), new)


def upsert_files(
    conn: Connection, records: Sequence[FileRecord], now: datetime
) -> dict[tuple[str, str], int]:
    """The id of each file, registering the new ones; a known DID must match its checksum,
    and a DID given twice must come with one checksum."""
    wanted: dict[tuple[str, str], FileRecord] = {}
    for r in records:
        given = wanted.setdefault((r.scope, r.name), r)
        if (given.size, given.adler32) != (r.size, r.adler32):
            raise NameTaken(
                f"file {r.did} is given with size {given.size} and adler32 {given.adler32} "
                f"and with size {r.size} and adler32 {r.adler32}"
            )
    ids = _file_ids(conn, wanted)
    new = [r for key, r in wanted.items() if key not in ids]
    if new:
        conn.execute(insert(files), [{**r.__dict__, "created_at": now} for r in new])
        ids |= _file_ids(conn, {(r.scope, r.name): r for r in new})
    return ids


def _file_ids(
    conn: Connection, wanted: dict[tuple[str, str], FileRecord]
) -> dict[tuple[str, str], int]:
    ids: dict[tuple[str, str], int] = {}
    for part in chunks(list(wanted)):
        stmt = select(files).where(_dids_in(conn, part))
        for row in conn.execute(stmt):
            given = wanted[(row.scope, row.name)]
            if (row.size, row.adler32) != (given.size, given.adler32):
                raise NameTaken(
                    f"file {given.did} is registered with size {row.size} and adler32 "
                    f"{row.adler32}, not {given.size} and {given.adler32}"
                )
            ids[(row.scope, row.name)] = row.id
    return ids


def add_to_dataset(conn: Connection, dataset: str, file_ids: Sequence[int], now: datetime) -> int:
    """Append files to an open dataset (those already in it are skipped); how many added."""
    return add_to_datasets(conn, {dataset: file_ids}, now)[dataset]


def add_to_datasets(
    conn: Connection, wanted: Mapping[str, Sequence[int]], now: datetime
) -> dict[str, int]:
    """:func:`add_to_dataset` for several datasets; how many files each gained."""
    state: dict[str, str] = {}
    for part in chunks(list(wanted)):
        stmt = select(datasets.c.name, datasets.c.state).where(datasets.c.name.in_(part))
        state |= {r.name: r.state for r in conn.execute(stmt)}
    for name in wanted:
        if name not in state:
            raise NotFound(f"no dataset {name!r}")
        if state[name] != OPEN:
            raise BadInput(f"dataset {name!r} is {state[name]}: no files can be added")
    present = _contents(conn, [(i, name) for name, ids in wanted.items() for i in ids])
    new = {
        name: fresh
        for name, ids in wanted.items()
        if (fresh := list(dict.fromkeys(i for i in ids if (i, name) not in present)))
    }
    if new:
        last: dict[str, int] = {}
        for part in chunks(list(new)):
            stmt = (
                select(dataset_contents.c.dataset, func.max(dataset_contents.c.position))
                .where(dataset_contents.c.dataset.in_(part))
                .group_by(dataset_contents.c.dataset)
            )
            last |= {name: top for name, top in conn.execute(stmt)}
        conn.execute(
            insert(dataset_contents),
            [
                {
                    "dataset": name,
                    "file_id": fid,
                    "position": last.get(name, 0) + n,
                    "added_at": now,
                }
                for name, ids in new.items()
                for n, fid in enumerate(ids, start=1)
            ],
        )
        for part in chunks(list(new)):
            conn.execute(update(datasets).where(datasets.c.name.in_(part)).values(modified_at=now))
    return {name: len(new.get(name, ())) for name in wanted}


def _contents(conn: Connection, keys: Sequence[tuple[int, str]]) -> set[tuple[int, str]]:
    """Which (file id, dataset) pairs of ``keys`` are dataset contents already."""
    present: set[tuple[int, str]] = set()
    for part in chunks(keys):
        stmt = select(dataset_contents.c.file_id, dataset_contents.c.dataset).where(
            pairs_in(conn, dataset_contents.c.file_id, dataset_contents.c.dataset, part)
        )
        present |= {(r.file_id, r.dataset) for r in conn.execute(stmt)}
    return present


def add_replicas(
    conn: Connection, site: str, paths: dict[int, str], now: datetime, state: str = AVAILABLE
) -> None:
    """Record copies of files (by id) at ``site``'s SE; an existing replica is updated."""
    ids = list(paths)
    known: set[int] = set()
    for part in chunks(ids):
        stmt = select(replicas.c.file_id).where(
            pairs_in(conn, replicas.c.file_id, replicas.c.site, ((i, site) for i in part))
        )
        known |= {r.file_id for r in conn.execute(stmt)}
    rows = [
        {"file_id": i, "site": site, "path": paths[i], "state": state, "modified_at": now}
        for i in ids
    ]
    fresh = [{**r, "created_at": now} for r in rows if r["file_id"] not in known]
    if fresh:
        conn.execute(insert(replicas), fresh)
    for r in rows:
        if r["file_id"] in known:
            conn.execute(
                update(replicas)
                .where(replicas.c.file_id == r["file_id"], replicas.c.site == site)
                .values(path=r["path"], state=state, modified_at=now)
            )


def register(
    conn: Connection,
    dataset: str,
    placed: Sequence[tuple[FileRecord, str]],
    site: str | None,
    now: datetime,
    kind: str = "input",
    task_id: str | None = None,
) -> int:
    """Put files into a dataset, with a replica at ``site`` at each given SE path.

    ``placed`` is (file, path) pairs; without a site the files are only
    catalogued. Returns how many files were new to the dataset.
    """
    return register_all(conn, [Placement(dataset, placed, site, kind, task_id)], now)[dataset]


def register_all(
    conn: Connection, placements: Sequence[Placement], now: datetime
) -> dict[str, int]:
    """:func:`register` for several placements in a few statements; how many files were
    new to each dataset."""
    kinds: dict[str, tuple[str, str | None, str | None]] = {}
    for p in placements:
        kind, _, _ = kinds.setdefault(p.dataset, (p.kind, p.task_id, None))
        if kind != p.kind:
            raise BadInput(f"dataset {p.dataset!r} is given as a {kind} and a {p.kind} dataset")
    ensure_datasets(conn, kinds, now)
    ids = upsert_files(conn, [f for p in placements for f, _ in p.placed], now)
    members: dict[str, list[int]] = defaultdict(list)
    paths: dict[str, dict[int, str]] = defaultdict(dict)
    for p in placements:
        members[p.dataset] += [ids[(f.scope, f.name)] for f, _ in p.placed]
        if p.site is not None:
            paths[p.site] |= {ids[(f.scope, f.name)]: path for f, path in p.placed}
    added = add_to_datasets(conn, members, now)
    for site, at in paths.items():
        add_replicas(conn, site, at, now)
    return added


def dataset_exists(conn: Connection, name: str) -> bool:
    """Whether dataset ``name`` is in the catalogue."""
    return conn.execute(select(datasets.c.name).where(datasets.c.name == name)).first() is not None


def dataset_files(conn: Connection, dataset: str) -> list[FileRecord]:
    """The files of a dataset, in the order they were added."""
    stmt = (
        select(files)
        .join(dataset_contents, dataset_contents.c.file_id == files.c.id)
        .where(dataset_contents.c.dataset == dataset)
        .order_by(dataset_contents.c.position, files.c.id)
    )
    return [_record(r) for r in conn.execute(stmt).mappings()]


def _record(row: Any) -> FileRecord:
    return FileRecord(row["scope"], row["name"], row["guid"], row["size"], row["adler32"])


def files_by_did(conn: Connection, dids: Iterable[str]) -> dict[str, tuple[int, FileRecord]]:
    """(id, file) of each DID that is registered."""
    keys = list({split_did(d) for d in dids})
    found: dict[str, tuple[int, FileRecord]] = {}
    for part in chunks(keys):
        stmt = select(files).where(_dids_in(conn, part))
        for row in conn.execute(stmt).mappings():
            record = _record(row)
            found[record.did] = (row["id"], record)
    return found


def replica_sites(conn: Connection, dids: Iterable[str]) -> dict[str, set[str]]:
    """For a set of files (DIDs), the sites where each has an available replica;
    files with none (or not registered) are left out."""
    return {did: sites for did, (_, sites) in file_replicas(conn, dids).items() if sites}


def file_replicas(conn: Connection, dids: Iterable[str]) -> dict[str, tuple[int, set[str]]]:
    """For a set of files (DIDs), the id of each registered one and the sites where it
    has an available replica (none: an empty set)."""
    keys = list({split_did(d) for d in dids})
    found: dict[str, tuple[int, set[str]]] = {}
    available = and_(replicas.c.file_id == files.c.id, replicas.c.state == AVAILABLE)
    for part in chunks(keys):
        stmt = (
            select(files.c.id, files.c.scope, files.c.name, replicas.c.site)
            .outerjoin(replicas, available)
            .where(_dids_in(conn, part))
        )
        for file_id, scope, name, site in conn.execute(stmt):
            _, sites = found.setdefault(f"{scope}:{name}", (file_id, set()))
            if site is not None:
                sites.add(site)
    return found


def replicas_at(conn: Connection, site: str, file_ids: Sequence[int]) -> dict[int, str]:
    """Path of each of ``file_ids`` that has an available replica at ``site``."""
    paths: dict[int, str] = {}
    for part in chunks(list(file_ids)):
        stmt = select(replicas.c.file_id, replicas.c.path).where(
            replicas.c.site == site, replicas.c.state == AVAILABLE, replicas.c.file_id.in_(part)
        )
        paths |= {r.file_id: r.path for r in conn.execute(stmt)}
    return paths


def list_datasets(conn: Connection) -> list[dict[str, Any]]:
    """Every dataset with its number of files, by name."""
    counts = (
        select(dataset_contents.c.dataset, func.count().label("files"))
        .group_by(dataset_contents.c.dataset)
        .subquery()
    )
    stmt = (
        select(datasets, func.coalesce(counts.c.files, 0).label("files"))
        .outerjoin(counts, counts.c.dataset == datasets.c.name)
        .order_by(datasets.c.name)
    )
    return [iso_times(dict(r)) for r in conn.execute(stmt).mappings()]


def sources(conn: Connection, dataset: str) -> list[tuple[FileRecord, dict[str, str]]]:
    """Each file of a dataset, in order, with its available replicas (site → path)."""
    stmt = (
        select(files, replicas.c.site, replicas.c.path)
        .join(dataset_contents, dataset_contents.c.file_id == files.c.id)
        .outerjoin(replicas, (replicas.c.file_id == files.c.id) & (replicas.c.state == AVAILABLE))
        .where(dataset_contents.c.dataset == dataset)
        .order_by(dataset_contents.c.position, replicas.c.site)
    )
    found: dict[FileRecord, dict[str, str]] = {}
    for row in conn.execute(stmt).mappings():
        at = found.setdefault(_record(row), {})
        if row["site"] is not None:
            at[row["site"]] = row["path"]
    return list(found.items())


def close(conn: Connection, dataset: str, now: datetime) -> bool:
    """Close an open dataset; False if it was closed already."""
    stmt = (
        update(datasets)
        .where(datasets.c.name == dataset, datasets.c.state == OPEN)
        .values(state=CLOSED, closed_at=now, modified_at=now)
        .returning(datasets.c.name)
    )
    return conn.execute(stmt).first() is not None


def reopen(conn: Connection, names: Iterable[str], now: datetime) -> None:
    """Open closed datasets again (nothing happens to an open or unknown one)."""
    for part in chunks(list(set(names))):
        conn.execute(
            update(datasets)
            .where(datasets.c.name.in_(part), datasets.c.state == CLOSED)
            .values(state=OPEN, closed_at=None, modified_at=now)
        )


def describe(conn: Connection, name: str) -> dict[str, Any]:
    """One dataset: its row, and its files in order with the sites that have each."""
    row = conn.execute(select(datasets).where(datasets.c.name == name)).mappings().first()
    if row is None:
        raise NotFound(f"no dataset {name!r}")
    shown = iso_times(dict(row))
    shown["files"] = [
        {**record.__dict__, "did": record.did, "sites": sorted(at)}
        for record, at in sources(conn, name)
    ]
    return shown
