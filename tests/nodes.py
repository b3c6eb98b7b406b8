"""Private RabbitMQ and PostgreSQL servers, for tests that stop and restart them.

The machine's shared servers (``tests/services.py``) are never restarted:
these run from a temporary directory, on ports of their own, as the
``rabbitmq`` and ``postgres`` users (the packaged ``rabbitmq-server`` switches
to its user when run as root, and ``initdb`` refuses to run as root).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from urllib.parse import unquote, urlsplit

import psycopg

from broker.settings import broker_nodes
from tests.budget import TEARDOWN_S
from tests.harness import wait_for

PG_BIN = Path("/usr/lib/postgresql/15/bin")
#: Ports below Linux's ephemeral range (32768+), so that no client socket can
#: take one while its server is down, and below the ports rabbitmqctl itself
#: listens on (35672-35682); 25672 is the shared node's distribution port.
PORT_RANGE = (20000, 32000)
TAKEN_PORTS = {25672}
#: The most a private RabbitMQ node may take to start, and to stop.
RABBITMQ_START_S = 60.0
RABBITMQ_STOP_S = 30.0
#: The most one ``rabbitmqctl`` call may take.
CTL_TIMEOUT_S = 60.0
#: The most one PostgreSQL command (initdb, pg_ctl start, stop or restart) may take.
POSTGRES_CTL_S = 60.0
#: What the session's private servers cost the first test that asks for them.
PRIVATE_SERVERS_S = RABBITMQ_START_S + 2 * POSTGRES_CTL_S
#: The timeout of a test that stops and starts a private server: the servers' start
#: (when it is the first to ask for them), one restart, and a minute for the jobs around it.
RESTART_TEST_TIMEOUT_S = PRIVATE_SERVERS_S + RABBITMQ_STOP_S + RABBITMQ_START_S + 60.0 + TEARDOWN_S


def free_port() -> int:
    """A port on 127.0.0.1 nothing listens on, outside the ephemeral range."""
    while True:
        port = random.randrange(*PORT_RANGE)
        if port in TAKEN_PORTS:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        TAKEN_PORTS.add(port)
        return port


def private_dir(prefix: str, owner: str) -> Path:
    """A new directory under the system's temporary directory, owned by ``owner``."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    shutil.chown(path, owner, owner)
    return path


class RabbitMQNode:
    """A RabbitMQ node of its own: started, stopped and restarted for real."""

    def __init__(self, extra_config: str = "", plugins: tuple[str, ...] = ()) -> None:
        assert os.geteuid() == 0, "private RabbitMQ and PostgreSQL servers need root"
        self.name = f"pandamq-{uuid.uuid4().hex[:8]}@localhost"
        self.port = free_port()
        self.base = private_dir("pandamq-rabbitmq-", "rabbitmq")
        config = self.base / "rabbitmq.conf"
        config.write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n" + extra_config
        )
        (self.base / "enabled_plugins").write_text(f"[{','.join(plugins)}].\n" if plugins else "")
        self.env = {
            **os.environ,
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_CONFIG_FILE": str(config),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
        }
        self._server: subprocess.Popen[bytes] | None = None

    def url(self, vhost: str = "/") -> str:
        """The amqp:// URL of a vhost on this node."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{vhost.replace('/', '%2F')}"

    @property
    def running(self) -> bool:
        """Whether the server process is up (it may still be booting)."""
        return self._server is not None and self._server.poll() is None

    def start(self) -> None:
        """Start the node and wait until it accepts connections."""
        self.launch()
        self.wait_started()

    def launch(self) -> None:
        """Start the node's server, without waiting for it (several nodes boot side by side)."""
        with (self.base / "server.out").open("ab") as out:
            self._server = subprocess.Popen(
                ["rabbitmq-server"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_started(self) -> None:
        """Wait until the launched node accepts connections."""
        wait_for(self._booted, RABBITMQ_START_S, what=f"RabbitMQ node {self.name} to start")

    def _booted(self) -> bool:
        assert self.running, f"RabbitMQ node {self.name} exited:\n{self.output()}"
        # `await_startup` fails at once while the node is not yet registered: poll it.
        return self.ctl("await_startup", "--timeout", "10", check=False).returncode == 0

    def stop(self) -> None:
        """Stop the node for real: the Erlang VM halts and clients see their connections reset."""
        if not self.running:
            return
        assert self._server is not None
        self.ctl("stop", check=False)
        try:
            self._server.wait(RABBITMQ_STOP_S)
        except subprocess.TimeoutExpired:
            os.killpg(self._server.pid, signal.SIGKILL)
            self._server.wait()

    def kill(self) -> None:
        """``kill -9`` the node: no goodbye to its peers or clients, as when a machine dies.

        The Erlang VM runs in a session of its own (the packaged script switches to the
        ``rabbitmq`` user), so it is killed by the pid it reports, then the script ends.
        """
        if not self.running:
            return
        assert self._server is not None
        vm = int(self.ctl("eval", "list_to_integer(os:getpid()).").stdout.strip())
        os.kill(vm, signal.SIGKILL)
        self._server.wait(RABBITMQ_STOP_S)
        wait_for(lambda: not _alive(vm), RABBITMQ_STOP_S, what=f"the VM of {self.name} to end")

    def restart(self) -> None:
        """Stop the node, then start it again; queues and persistent messages stay."""
        self.stop()
        self.start()

    def add_vhost(self) -> str:
        """A new vhost for guest; its URL."""
        vhost = f"pandamq-{uuid.uuid4().hex[:8]}"
        self.ctl("add_vhost", vhost)
        self.ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        return self.url(vhost)

    def ctl(
        self, *args: str, check: bool = True, timeout_s: float = CTL_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        """Run ``rabbitmqctl`` on this node."""
        # Not self.env: rabbitmqctl derives its own ports from RABBITMQ_NODE_PORT.
        env = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
        result = subprocess.run(
            ["rabbitmqctl", "-q", "-n", self.name, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if check:
            assert result.returncode == 0, f"rabbitmqctl {args}: {result.stderr}"
        return result

    def output(self) -> str:
        """What the server printed."""
        return (self.base / "server.out").read_text(errors="replace")

    def remove(self) -> None:
        """Stop the node and delete its files."""
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class RabbitMQCluster:
    """Three (or more) private RabbitMQ nodes joined into one cluster.

    The nodes run as the ``rabbitmq`` user, so they share its Erlang cookie. They
    boot side by side; then every node but the first joins the first.
    """

    def __init__(self, size: int = 3) -> None:
        self.nodes = [RabbitMQNode() for _ in range(size)]

    def start(self) -> None:
        """Start every node, then join them into one cluster."""
        for node in self.nodes:
            node.launch()
        for node in self.nodes:
            node.wait_started()
        first = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", first.name)
            node.ctl("start_app")
        running = first.ctl("eval", "length(rabbit_nodes:all_running()).").stdout.strip()
        assert running == str(len(self.nodes)), f"{running} of {len(self.nodes)} nodes run"

    def url(self, vhost: str) -> str:
        """A broker URL naming every node (``;``-separated), for clients that fail over."""
        return ";".join(node.url(vhost) for node in self.nodes)

    def add_vhost(self) -> str:
        """A new vhost for guest, on the whole cluster; the URL of every node for it."""
        vhost = f"pandamq-{uuid.uuid4().hex[:8]}"
        self.nodes[0].ctl("add_vhost", vhost)
        self.nodes[0].ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        return self.url(vhost)

    def running(self) -> list[RabbitMQNode]:
        """The nodes whose server runs."""
        return [node for node in self.nodes if node.running]

    def leaders(self, vhost_url: str) -> dict[str, str]:
        """Each quorum queue of the vhost and the node that leads it."""
        return self._queues(vhost_url, "leader")

    def depths(self, vhost_url: str) -> dict[str, int]:
        """Each queue of the vhost and the messages in it."""
        return {name: int(n) for name, n in self._queues(vhost_url, "messages").items()}

    def left_over(self, vhost_url: str) -> dict[str, int]:
        """The queues (but RabbitMQ's own ``amq.*`` reply queues) with messages in them,
        ready or delivered and not yet acknowledged."""
        depths = self.depths(vhost_url)
        return {n: d for n, d in depths.items() if d and not n.startswith("amq.")}

    def wait_drained(self, vhost_url: str, timeout_s: float = 30.0) -> None:
        """Wait until no queue of the vhost holds a message; fail naming those that still
        do, with their ready and unacknowledged counts. A delivery a consumer holds while
        it works (a service batch, a pilot's claim) counts until it is acknowledged, so
        the queues of a quiet system empty within moments, not at one instant."""
        try:
            wait_for(lambda: not self.left_over(vhost_url), timeout_s, "empty queues")
        except AssertionError:
            ready = self._queues(vhost_url, "messages_ready")
            unacked = self._queues(vhost_url, "messages_unacknowledged")
            left = {n: f"{ready[n]} ready, {unacked[n]} unacked" for n in self.left_over(vhost_url)}
            raise AssertionError(f"queues not drained after {timeout_s} s: {left}") from None

    def _queues(self, vhost_url: str, column: str) -> dict[str, str]:
        vhost = unquote(urlsplit(broker_nodes(vhost_url)[0]).path[1:])
        out = self.running()[0].ctl("list_queues", "-p", vhost, "name", column, "-s")
        return dict(line.split("\t") for line in out.stdout.splitlines() if "\t" in line)

    def remove(self) -> None:
        """Stop every node and delete their files."""
        for node in self.nodes:
            node.remove()


class PostgresCluster:
    """A PostgreSQL cluster of its own, run as the ``postgres`` user."""

    def __init__(self) -> None:
        assert os.geteuid() == 0, "private RabbitMQ and PostgreSQL servers need root"
        self.port = free_port()
        self.base = private_dir("pandamq-postgres-", "postgres")
        self.data = self.base / "data"
        self._as_postgres(
            PG_BIN / "initdb", "-D", self.data, "--auth=trust", "-U", "postgres", "-N"
        )

    def _as_postgres(self, *args: object) -> None:
        result = subprocess.run(
            ["runuser", "-u", "postgres", "--", *map(str, args)],
            check=False,
            capture_output=True,
            text=True,
            timeout=POSTGRES_CTL_S,
        )
        assert result.returncode == 0, f"{args[0]} failed: {result.stdout}{result.stderr}"

    def _pg_ctl(self, *args: str) -> None:
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = self.base / "server.log"
        self._as_postgres(PG_BIN / "pg_ctl", "-D", self.data, "-l", log, "-w", "-o", options, *args)

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of a database in this cluster."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def running(self) -> bool:
        """Whether the server runs (its postmaster holds the data directory)."""
        return (self.data / "postmaster.pid").exists()

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._pg_ctl("start")

    def stop(self) -> None:
        """Stop it; ``fast`` ends every open session."""
        self._pg_ctl("-m", "fast", "stop")

    def restart(self) -> None:
        """Stop and start it again, as an operator's ``pg_ctl restart`` does."""
        self._pg_ctl("-m", "fast", "restart")

    def add_database(self) -> str:
        """A new database; its URL."""
        name = f"pandamq_{uuid.uuid4().hex[:10]}"
        admin = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def remove(self) -> None:
        """Stop it and delete its files."""
        if self.running:
            self.stop()
        shutil.rmtree(self.base, ignore_errors=True)
