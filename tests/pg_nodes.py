"""A private PostgreSQL primary with a streaming replica, and a failover between them.

What a manager such as Patroni does, with PostgreSQL's own tools: ``initdb`` makes the
primary, ``pg_basebackup -R`` the replica (a standby streaming the primary's WAL), and a
failover stops the primary as a crash does (``pg_ctl stop -m immediate``) and promotes
the replica (``pg_ctl promote``). The replica is synchronous (``synchronous_standby_names
= '*'``, ``synchronous_commit = on``): a commit returns once the replica has the WAL on
disk, so a promoted replica has every transaction a client saw committed. The servers run
as the ``postgres`` user from temporary directories, on ports of their own; the machine's
cluster (port 5432) is never touched.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import psycopg

from tests.harness import wait_for
from tests.nodes import PG_BIN, POSTGRES_CTL_S, free_port, private_dir

#: The most the replica may take to stream from the primary, or to be promoted.
REPLICA_WAIT_S = 30.0


def as_postgres(*args: object) -> str:
    """Run a PostgreSQL program as the ``postgres`` user; its output."""
    result = subprocess.run(
        ["runuser", "-u", "postgres", "--", *map(str, args)],
        check=False,
        capture_output=True,
        text=True,
        timeout=POSTGRES_CTL_S,
    )
    assert result.returncode == 0, f"{args[0]} failed: {result.stdout}{result.stderr}"
    return result.stdout


class PostgresServer:
    """One PostgreSQL server of a data directory of its own."""

    def __init__(self, base: Path, options: str = "") -> None:
        self.base = base
        self.data = base / "data"
        self.port = free_port()
        self.options = options

    def pg_ctl(self, *args: str) -> None:
        """Run ``pg_ctl`` on this server's data directory."""
        options = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off "
            + self.options
        )
        log = self.base / "server.log"
        as_postgres(PG_BIN / "pg_ctl", "-D", self.data, "-l", log, "-w", "-o", options, *args)

    @property
    def running(self) -> bool:
        """Whether the server runs (its postmaster holds the data directory)."""
        return (self.data / "postmaster.pid").exists()

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self.pg_ctl("start")

    def crash(self) -> None:
        """Stop it as a crash does: no checkpoint, every session cut at once."""
        self.pg_ctl("-m", "immediate", "stop")

    def admin(self, sql: str) -> list[tuple[object, ...]]:
        """Run one statement in the ``postgres`` database; its rows."""
        with psycopg.connect(self.admin_url(), autocommit=True) as conn:
            cursor = conn.execute(sql.encode())
            return cursor.fetchall() if cursor.description else []

    def admin_url(self, database: str = "postgres") -> str:
        """The libpq URL of a database on this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def in_recovery(self) -> bool:
        """Whether it is a standby (replaying WAL) rather than a primary."""
        return bool(self.admin("SELECT pg_is_in_recovery()")[0][0])

    def log(self) -> str:
        """What the server logged."""
        return (self.base / "server.log").read_text(errors="replace")


class ReplicatedPostgres:
    """A primary and a synchronous streaming replica of it; ``failover`` makes the
    replica the primary. ``url`` names both servers, for clients that follow the primary."""

    def __init__(self) -> None:
        sync = "-c synchronous_standby_names=* -c synchronous_commit=on"
        self.primary = PostgresServer(private_dir("pandamq-pg-primary-", "postgres"), sync)
        self.replica = PostgresServer(private_dir("pandamq-pg-replica-", "postgres"))
        as_postgres(
            PG_BIN / "initdb", "-D", self.primary.data, "--auth=trust", "-U", "postgres", "-N"
        )

    def start(self) -> None:
        """Start the primary, copy it into the replica (``pg_basebackup -R``: a standby
        that streams from it), start the replica, and wait until it is synchronous."""
        self.primary.start()
        as_postgres(
            PG_BIN / "pg_basebackup",
            *("-h", "127.0.0.1", "-p", self.primary.port, "-U", "postgres"),
            *("-D", self.replica.data, "-R", "-X", "stream", "-c", "fast"),
        )
        self.replica.start()
        wait_for(self._synchronous, REPLICA_WAIT_S, what="the replica to stream synchronously")

    def _synchronous(self) -> bool:
        rows = self.primary.admin("SELECT state, sync_state FROM pg_stat_replication")
        return rows == [("streaming", "sync")]

    def servers(self) -> list[PostgresServer]:
        """The servers, the primary first."""
        return [self.primary, self.replica]

    def url(self, database: str, target: str = "read-write") -> str:
        """A SQLAlchemy URL naming both servers: libpq tries each in turn and keeps the
        first of the kind ``target`` asks for (``target_session_attrs``)."""
        hosts = "&".join(f"host=127.0.0.1:{s.port}" for s in self.servers())
        return (
            f"postgresql+psycopg://postgres@/{database}?{hosts}"
            f"&target_session_attrs={target}&connect_timeout=5"
        )

    def replica_url(self, database: str) -> str:
        """The SQLAlchemy URL of a database on the replica alone."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.replica.port}/{database}"

    def add_database(self) -> str:
        """A new database on the primary (the replica gets it too); its name."""
        name = f"pandamq_{uuid.uuid4().hex[:10]}"
        self.primary.admin(f'CREATE DATABASE "{name}"')
        return name

    def pause_replay(self) -> None:
        """The replica stops applying the WAL it receives (it still receives it, so the
        primary's commits go on); what it shows stays as it was."""
        self.replica.admin("SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        """The replica applies the WAL again."""
        self.replica.admin("SELECT pg_wal_replay_resume()")

    def failover(self) -> None:
        """Crash the primary, promote the replica, and wait until it takes writes: what
        a manager does when the primary's machine dies. The old primary stays down."""
        self.primary.crash()
        self.replica.pg_ctl("promote")
        wait_for(
            lambda: not self.replica.in_recovery(),
            REPLICA_WAIT_S,
            what="the promoted replica to take writes",
        )
        self.primary, self.replica = self.replica, self.primary

    def remove(self) -> None:
        """Stop both servers and delete their files."""
        for server in self.servers():
            if server.running:
                server.pg_ctl("-m", "fast", "stop")
            shutil.rmtree(server.base, ignore_errors=True)
