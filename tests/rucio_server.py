"""A real Rucio server for the tests: its REST application, its own database, its daemons.

The server runs from the ``rucio`` package in a virtual environment of its own
(``make .venv-rucio/.installed``; ``PANDAMQ_RUCIO_VENV`` names another): Rucio
pins SQLAlchemy, Flask and urllib3 versions pandamq need not share. A session
gets a PostgreSQL database of its own, built with Rucio's own
``build_database``, ``create_base_vo`` and ``create_root_account`` (what Rucio's
``tools/bootstrap.py`` runs), the Flask application
``rucio.web.rest.flaskapi.v1.main`` served by gunicorn on a free port, and the
daemons of ``tests/rucio_daemons.py`` (conveyor and judge; a local copier in
place of FTS). Everything is stopped and the database dropped at the end.

No test skips when the server cannot start: it fails with the reason.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from tests.nodes import free_port
from tests.services import POSTGRES_ADMIN, drop_database

REPO = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("PANDAMQ_RUCIO_VENV", REPO / ".venv-rucio"))
ROOT_USER, ROOT_PASSWORD = "ddmlab", "secret"
START_TIMEOUT_S = 60.0

CONFIG = """\
[common]
logdir = {dir}
loglevel = WARNING
[database]
default = {database}
pool_size = 5
[bootstrap]
userpass_identity = {user}
userpass_pwd = {password}
userpass_email = root@localhost
[alembic]
cfg = {dir}/alembic.ini
[policy]
permission = generic
schema = generic
lfn2pfn_algorithm_default = identity
[conveyor]
scheme = file
transfertool = posix-copy
[api]
endpoints_remove = opendata, opendata_public
"""

ALEMBIC = """\
[alembic]
script_location = {migrations}
sqlalchemy.url = {database}
[loggers]
keys = root
[handlers]
keys = console
[formatters]
keys = generic
[logger_root]
level = WARN
handlers = console
[handler_console]
class = StreamHandler
args = (sys.stderr,)
formatter = generic
[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
"""

BOOTSTRAP = (
    "from rucio.db.sqla.util import build_database, create_base_vo, create_root_account\n"
    "build_database(); create_base_vo(); create_root_account()\n"
)

#: The posix protocol of every test RSE: ``file://`` on this machine, read and written
#: by the pilot (lan) and by the transfers (wan, third-party copy).
_DOMAINS = {
    "lan": {"read": 1, "write": 1, "delete": 1},
    "wan": {
        "read": 1,
        "write": 1,
        "delete": 1,
        "third_party_copy_read": 1,
        "third_party_copy_write": 1,
    },
}


def missing() -> str | None:
    """Why the Rucio server cannot be started here, or None."""
    python = VENV / "bin" / "python"
    if not python.exists():
        return f"no Rucio server environment at {VENV}: run `make .venv-rucio/.installed`"
    found = subprocess.run(
        [str(python), "-c", "import rucio.web.rest.flaskapi.v1.main, gunicorn, psycopg"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "RUCIO_CONFIG": "/nonexistent"},
    )
    if found.returncode != 0 and "ModuleNotFoundError" in found.stderr:
        return f"the Rucio server environment {VENV} lacks a package: {found.stderr.strip()[-300:]}"
    return None


@dataclass(frozen=True)
class ServerTls:
    """What an HTTPS Rucio server needs: its certificate and key, and the CA whose
    client certificates it accepts (the clients verify the server against it too)."""

    cert: Path
    key: Path
    ca: Path


@dataclass
class RucioServer:
    """One running Rucio server; ``client()`` logs in as root. With ``tls`` it speaks
    HTTPS only and takes x509 logins (``tests/rucio_x509_app.py``)."""

    dir: Path
    tls: ServerTls | None = None
    url: str = ""
    database: str = ""
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    rses: set[str] = field(default_factory=set)

    def start(self) -> None:
        """Create the database and the root account, start the server and the daemons."""
        problem = missing()
        if problem:
            raise AssertionError(f"the Rucio server cannot run: {problem}")
        self.database = f"rucio_test_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.database}"')
        self._configure()
        self._run_python(BOOTSTRAP, "bootstrap")
        port = free_port()
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{port}"
        self._spawn(
            "gunicorn",
            [
                str(VENV / "bin" / "gunicorn"),
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
                "--threads",
                "4",
                "--timeout",
                "120",
                "--graceful-timeout",
                "5",
                "--no-control-socket",
                *self._tls_options(),
            ],
        )
        self._wait_ready()
        self._spawn("daemons", [str(VENV / "bin" / "python"), str(REPO / "tests/rucio_daemons.py")])

    def _tls_options(self) -> list[str]:
        """gunicorn's options for the application, with TLS if the server has it: a client
        certificate is asked for and, when one is shown, verified (``--cert-reqs 1``, as
        mod_ssl's ``SSLVerifyClient optional``), so that userpass logins work as well."""
        if self.tls is None:
            return ["rucio.web.rest.flaskapi.v1.main:application"]
        return [
            "--certfile",
            str(self.tls.cert),
            "--keyfile",
            str(self.tls.key),
            "--ca-certs",
            str(self.tls.ca),
            "--cert-reqs",
            "1",
            "--pythonpath",
            str(REPO / "tests"),
            "rucio_x509_app:application",
        ]

    def stop(self) -> None:
        """Stop the daemons and the server; drop the database."""
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes = []
        if self.database:
            drop_database(self.database)

    def client(self, **kwargs: Any) -> Any:
        """A ``rucio.client.Client`` logged in as root."""
        from rucio.client import Client

        return Client(
            rucio_host=self.url,
            auth_host=self.url,
            account="root",
            auth_type="userpass",
            creds={"username": ROOT_USER, "password": ROOT_PASSWORD},
            ca_cert=str(self.tls.ca) if self.tls else None,
            timeout=kwargs.pop("timeout", 30),
            **kwargs,
        )

    def add_rse(self, name: str, prefix: Path, limit_bytes: int = -1) -> None:
        """A deterministic posix RSE at ``prefix``, files at ``<scope>/<name>`` (the local SE's
        layout), distance 1 from every other RSE of the session; root may fill it up to
        ``limit_bytes`` (-1: no limit)."""
        client = self.client()
        prefix.mkdir(parents=True, exist_ok=True)
        client.add_rse(name, deterministic=True)
        client.add_rse_attribute(name, "lfn2pfn_algorithm", "identity")
        client.add_protocol(
            name,
            {
                "scheme": "file",
                "impl": "rucio.rse.protocols.posix.Default",
                "hostname": "localhost",
                "port": 0,
                "prefix": f"{prefix}/",
                "domains": _DOMAINS,
            },
        )
        client.set_local_account_limit("root", name, limit_bytes)
        for other in self.rses:
            client.add_distance(name, other, {"distance": 1})
            client.add_distance(other, name, {"distance": 1})
        self.rses.add(name)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """The server's processes stopped (SIGSTOP): connections are accepted and never
        answered, as by a Rucio that hangs; they go on (SIGCONT) afterwards."""
        (server, *_) = self.processes
        pids = [server.pid, *_children(server.pid)]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)

    def add_account(self, name: str, password: str) -> None:
        """A user account logging in with userpass as ``name`` (a fresh name has no token
        cached on this machine, so its first call logs in)."""
        client = self.client()
        client.add_account(name, "USER", f"{name}@localhost")
        client.add_identity(name, name, "USERPASS", f"{name}@localhost", True, password)

    def add_x509_account(self, name: str, dn: str) -> None:
        """A user account logging in with a certificate whose subject is ``dn`` (mod_ssl's
        form, ``CN=name,O=organisation``)."""
        client = self.client()
        client.add_account(name, "USER", f"{name}@localhost")
        client.add_identity(name, dn, "X509", f"{name}@localhost", True)

    def add_scope(self, scope: str) -> None:
        """A scope of root's, if it is not there yet."""
        from rucio.common.exception import Duplicate

        with suppress(Duplicate):
            self.client().add_scope("root", scope)

    def _configure(self) -> None:
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.database}"
        migrations = self._site_packages() / "rucio" / "db" / "sqla" / "migrate_repo"
        (self.dir / "alembic.ini").write_text(ALEMBIC.format(migrations=migrations, database=url))
        (self.dir / "rucio.cfg").write_text(
            CONFIG.format(dir=self.dir, database=url, user=ROOT_USER, password=ROOT_PASSWORD)
        )

    def _site_packages(self) -> Path:
        (found,) = (VENV / "lib").glob("python3*/site-packages")
        return found

    def _env(self) -> dict[str, str]:
        return {**os.environ, "RUCIO_CONFIG": str(self.dir / "rucio.cfg"), "PYTHONPATH": ""}

    def _run_python(self, code: str, what: str) -> None:
        done = subprocess.run(
            [str(VENV / "bin" / "python"), "-c", code],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"Rucio {what} failed: {done.stderr.strip()[-2000:]}")

    def _spawn(self, name: str, command: list[str]) -> None:
        with (self.dir / f"{name}.log").open("wb") as log:  # the child keeps its own copy
            self.processes.append(
                subprocess.Popen(
                    command, env=self._env(), stdout=log, stderr=subprocess.STDOUT, cwd=self.dir
                )
            )

    def _wait_ready(self) -> None:
        context = ssl.create_default_context(cafile=self.tls.ca) if self.tls else None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.processes):
                break
            with (
                suppress(OSError),
                urllib.request.urlopen(f"{self.url}/ping", timeout=2, context=context) as answer,
            ):
                if answer.status == 200:
                    return
            time.sleep(0.2)
        log = (self.dir / "gunicorn.log").read_text(errors="replace")[-2000:]
        raise AssertionError(f"the Rucio server did not answer on {self.url}/ping: {log}")

    def log(self, name: str) -> str:
        """The end of a process's log (``gunicorn``, ``daemons``), for a failing test."""
        return (self.dir / f"{name}.log").read_text(errors="replace")[-3000:]


def _children(pid: int) -> list[int]:
    """The processes ``pid`` started (gunicorn's workers)."""
    listed = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(p) for p in listed]


@contextmanager
def rucio_server(directory: Path, tls: ServerTls | None = None) -> Iterator[RucioServer]:
    """A started Rucio server in ``directory``; stopped, its database dropped, afterwards."""
    server = RucioServer(directory, tls)
    try:
        server.start()
        yield server
    finally:
        server.stop()


if __name__ == "__main__":  # a server to try things by hand: python -m tests.rucio_server DIR
    with rucio_server(Path(sys.argv[1])) as running:
        print(running.url, flush=True)
        with suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
