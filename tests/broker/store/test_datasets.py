"""Files, datasets and replicas in SQL, the same contract on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import Engine

from broker.errors import BadInput
from broker.store.clock import now
from broker.store.datasets import (
    FileRecord,
    Placement,
    dataset_files,
    list_datasets,
    register,
    register_all,
    replica_sites,
)
from broker.store.engine import transaction
from broker.store.sites import add_site


def new_files(count: int, scope: str = "user") -> list[FileRecord]:
    tag = uuid.uuid4().hex[:8]
    return [
        FileRecord(scope, f"f{tag}.{i:03d}", uuid.uuid4().hex, 100 + i, f"{i:08x}")
        for i in range(count)
    ]


def test_files_are_listed_in_the_order_they_were_registered(engine: Engine) -> None:
    # Given a dataset registered in two steps, the second repeating a file
    files = new_files(5)
    name = f"ds.{uuid.uuid4().hex}"
    with transaction(engine) as conn:
        add_site(conn, "DS_SITE_A")
        first = register(conn, name, [(f, f"/se/{f.name}") for f in files[:3]], "DS_SITE_A", now())
        second = register(conn, name, [(f, f"/se/{f.name}") for f in files[2:]], None, now())
    # When its files are listed
    with transaction(engine) as conn:
        listed = dataset_files(conn, name)
        summary = [d for d in list_datasets(conn) if d["name"] == name]
    # Then they come in order, each once, and the dataset is an open input dataset
    assert (first, second) == (3, 2)
    assert listed == files
    assert [(d["kind"], d["state"], d["files"]) for d in summary] == [("input", "open", 5)]


def test_replica_sites_names_the_sites_each_file_is_at(engine: Engine) -> None:
    # Given 4 files at site A, 2 of them also at site B
    files = new_files(4)
    with transaction(engine) as conn:
        for site in ("DS_SITE_A", "DS_SITE_B"):
            add_site(conn, site)
        register(conn, f"a.{uuid.uuid4().hex}", [(f, "/a") for f in files], "DS_SITE_A", now())
        register(conn, f"b.{uuid.uuid4().hex}", [(f, "/b") for f in files[:2]], "DS_SITE_B", now())
    # When brokerage asks where 3 of them (and an unknown file) are
    with transaction(engine) as conn:
        where = replica_sites(conn, [f.did for f in files[1:]] + ["user:nowhere"])
    # Then each file names the sites that have it, and the unknown file is left out
    both, a_only = {"DS_SITE_A", "DS_SITE_B"}, {"DS_SITE_A"}
    assert where == {files[1].did: both, files[2].did: a_only, files[3].did: a_only}


def test_a_known_file_with_another_checksum_is_refused(engine: Engine) -> None:
    # Given a registered file
    (f,) = new_files(1)
    with transaction(engine) as conn:
        register(conn, f"c.{uuid.uuid4().hex}", [(f, "/x")], None, now())
    # When the same DID comes with another checksum, Then it is refused
    other = FileRecord(f.scope, f.name, f.guid, f.size, "ffffffff")
    with pytest.raises(BadInput, match="adler32"), transaction(engine) as conn:
        register(conn, f"d.{uuid.uuid4().hex}", [(other, "/x")], None, now())


def test_placements_registered_together_land_in_their_datasets_and_sites(engine: Engine) -> None:
    # Given files for two datasets at two sites, one dataset given twice, one file twice
    files = new_files(5)
    out, log = f"out.{uuid.uuid4().hex}", f"log.{uuid.uuid4().hex}"
    placements = [
        Placement(out, [(f, f"/a/{f.name}") for f in files[:2]], "DS_SITE_A", "output"),
        Placement(out, [(f, f"/b/{f.name}") for f in files[2:4]], "DS_SITE_B", "output"),
        Placement(log, [(f, f"/b/{f.name}") for f in files[3:]], "DS_SITE_B", "log"),
    ]
    with transaction(engine) as conn:
        for site in ("DS_SITE_A", "DS_SITE_B"):
            add_site(conn, site)
        added = register_all(conn, placements, now())
    # Then each dataset holds its files in order, each at the site it was placed at
    with transaction(engine) as conn:
        assert (dataset_files(conn, out), dataset_files(conn, log)) == (files[:4], files[3:])
        where = replica_sites(conn, [f.did for f in files])
        kinds = {d["name"]: d["kind"] for d in list_datasets(conn) if d["name"] in (out, log)}
    assert added == {out: 4, log: 2}
    assert kinds == {out: "output", log: "log"}
    a, b = {"DS_SITE_A"}, {"DS_SITE_B"}
    assert where == {f.did: (a if i < 2 else b) for i, f in enumerate(files)}


def test_one_file_given_with_two_checksums_refuses_the_whole_registration(
    engine: Engine,
) -> None:
    # Given two placements naming the same DID with different checksums
    (f,) = new_files(1)
    other = FileRecord(f.scope, f.name, f.guid, f.size, "ffffffff")
    name = f"e.{uuid.uuid4().hex}"
    placements = [Placement(name, [(f, "/x")]), Placement(name, [(other, "/x")])]
    # When they are registered together, Then both checksums are named and nothing is kept
    with pytest.raises(BadInput, match="ffffffff"), transaction(engine) as conn:
        register_all(conn, placements, now())
    with transaction(engine) as conn:
        assert name not in {d["name"] for d in list_datasets(conn)}
