"""Both DDM backends behind one fixture, for the contract tests: the local DDM, and
Rucio (a real server of this session's own, tests/rucio_server.py)."""

from __future__ import annotations

import getpass
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from broker.scopes import owner_scope
from broker.settings import Settings
from broker.store import datasets
from broker.store.clock import now
from broker.store.datasets import FileRecord
from broker.store.engine import open_engine, transaction
from broker.store.migrate import upgrade
from broker.store.sites import add_site
from ddm_bridge.backend import DDMBackend, Report
from ddm_bridge.backends.local import LocalDDM
from ddm_bridge.se import checksum, se_path
from tests.conftest import test_settings
from tests.harness import wait_for
from tests.rucio_server import RucioServer, rucio_server

#: The scope of the test files; Rucio's test server has it.
SCOPE = "data"
#: The scopes of the outputs and logs of the tests' jobs (``broker.scopes.owner_scope``
#: of the users they are submitted as: the local user on the in-process transport),
#: which Rucio must have to take them.
JOB_SCOPES = ("user", owner_scope("guest"), owner_scope(getpass.getuser()))


@pytest.fixture(scope="session")
def rucio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RucioServer]:
    """The session's Rucio server, with the scopes the tests write into."""
    with rucio_server(tmp_path_factory.mktemp("rucio")) as server:
        for scope in (SCOPE, "panda", *JOB_SCOPES):
            server.add_scope(scope)
        yield server


def rucio_settings(server: RucioServer, settings: Settings, **changes: Any) -> Settings:
    """``settings`` pointed at the test server as root."""
    login = {
        "rucio_host": server.url,
        "rucio_account": "root",
        "rucio_username": "ddmlab",
        "rucio_password": "secret",
        "rucio_poll_interval_s": 0.2,
        "rucio_timeout_s": 20.0,
    }
    return settings.replace(**{**login, **changes})


@dataclass
class DDM:
    """A backend of either kind, on a database of the test's own, with sites to use."""

    kind: str
    settings: Settings
    engine: Engine
    backend: DDMBackend
    rucio: RucioServer | None = None

    def new_site(self, limit_bytes: int = -1) -> str:
        """A site (for Rucio, an RSE of that name at the site's SE directory)."""
        site = f"SITE_{uuid.uuid4().hex[:8].upper()}"
        with transaction(self.engine) as conn:
            add_site(conn, site)
        if self.rucio is not None:
            self.rucio.add_rse(site, Path(self.settings.ddm_root) / site, limit_bytes)
        return site

    def put(self, dataset: str, site: str, content: bytes, scope: str = SCOPE) -> FileRecord:
        """Write a new file on ``site``'s SE and register it into ``dataset`` there."""
        name = f"in.{uuid.uuid4().hex[:10]}.dat"
        path = se_path(self.settings.ddm_root, site, scope, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        found = checksum(path)
        record = FileRecord(scope, name, str(uuid.uuid4()), found.size, found.adler32)
        assert self.backend.register(dataset, site, [(record, path)], "input") == 1
        return record

    def dispatch(self, records: list[FileRecord]) -> str:
        """A new dispatch dataset of ``records`` in the catalogue, as the bridge makes one."""
        name = f"panda.dis.{uuid.uuid4().hex[:12]}"
        with transaction(self.engine) as conn:
            datasets.register(conn, name, [(r, "") for r in records], None, now(), "dispatch")
        return name

    def until_ended(self, dataset: str, site: str, timeout_s: float = 60.0) -> list[Report]:
        """The reports of the subscription up to the one that ended it (done or failed)."""
        taken: list[Report] = []

        def ended() -> bool:
            taken.extend(
                r for r in self.backend.reports() if (r.dataset, r.site) == (dataset, site)
            )
            return any(r.state != "transferring" for r in taken)

        wait_for(ended, timeout_s, what=f"subscription of {dataset} to {site} ended")
        end = next(i for i, r in enumerate(taken) if r.state != "transferring")
        return taken[: end + 1]

    def catalogue(self, dataset: str) -> dict[str, tuple[int, str]]:
        """The backend's own record of ``dataset``'s files: DID → (bytes, adler32)."""
        if self.rucio is None:
            with transaction(self.engine) as conn:
                return {r.did: (r.size, r.adler32) for r in datasets.dataset_files(conn, dataset)}
        from rucio.common.exception import DataIdentifierNotFound

        try:
            files = list(self.rucio.client().list_files(self.settings.rucio_scope, dataset))
        except DataIdentifierNotFound:
            return {}
        return {f"{f['scope']}:{f['name']}": (f["bytes"], f["adler32"]) for f in files}

    def is_open(self, dataset: str) -> bool:
        """Whether the backend's own catalogue has ``dataset`` open."""
        if self.rucio is None:
            with transaction(self.engine) as conn:
                listed = {d["name"]: d["state"] for d in datasets.list_datasets(conn)}
            return listed[dataset] == datasets.OPEN
        meta = self.rucio.client().get_metadata(self.settings.rucio_scope, dataset)
        return bool(meta["is_open"])


@contextmanager
def backend_of(kind: str, tmp_path: Path, server: RucioServer | None) -> Iterator[DDM]:
    """A DDM of ``kind`` ("local", or "rucio" on ``server``) on a new SQLite catalogue."""
    settings = test_settings("memory://", f"sqlite:///{tmp_path / 'pandamq.sqlite'}", tmp_path)
    engine = open_engine(settings.database_url)
    upgrade(engine)
    if server is None:
        made = DDM(kind, settings, engine, LocalDDM(settings, engine))
    else:
        from ddm_bridge.backends.rucio import RucioDDM

        settings = rucio_settings(server, settings)
        made = DDM(kind, settings, engine, RucioDDM(settings, engine), server)
    try:
        yield made
    finally:
        made.backend.stop()
        engine.dispose()


@pytest.fixture(params=["local", "rucio"])
def ddm(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DDM]:
    """The same test on the local DDM and on Rucio."""
    server = request.getfixturevalue("rucio") if request.param == "rucio" else None
    with backend_of(request.param, tmp_path, server) as made:
        yield made
