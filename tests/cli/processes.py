"""Real ``pandamq`` processes for tests: one-shot commands and long-running services.

Every process started here is killed when the test ends, whatever happened.
Services write their output to files, so a chatty process never blocks on a
full pipe and a failing test can show what each one logged.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.protocol import JobSpec, decode
from broker.settings import Settings
from broker.store.engine import open_engine, transaction
from broker.store.jobs import states_of
from cli.benchmark.submissions import publish_specs
from tests.budget import capped
from tests.harness import wait_for

PANDAMQ = str(Path(sys.executable).parent / "pandamq")

#: How long a leftover service gets to stop at the end of a test, per signal.
CLOSE_GRACE_S = 10.0
#: How long ``submit`` waits for a broker service that has just been started.
SERVICE_START_S = 60.0

#: What a broker service logs once its queues and exchanges are declared.
READY = "broker service ready on "

#: Every state a job that runs once and succeeds passes through, in order.
LIFE = ["defined", "assigned", "activated", "sent", "starting", "running", "holding", "finished"]


@dataclass
class Service:
    """A long-running ``pandamq`` process and the files it writes to."""

    name: str
    popen: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    #: Set once the test has seen it end; until then, ending is a failure.
    awaited: bool = False

    def output(self) -> str:
        """What it printed on stdout so far."""
        return self.stdout_path.read_text(errors="replace")

    def log(self) -> str:
        """What it logged on stderr so far."""
        return self.stderr_path.read_text(errors="replace")

    def wait(self, timeout_s: float) -> int:
        """Its exit code; fails the test if it is still running after ``timeout_s`` (or
        what is left of the test's budget)."""
        timeout_s = capped(timeout_s)
        try:
            code = self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} still running after {timeout_s} s; its log:\n{self.log()}"
            ) from None
        self.awaited = True
        return code

    def wait_logged(self, text: str, timeout_s: float = SERVICE_START_S) -> None:
        """Wait until it has logged ``text`` (``READY`` for a broker service); fail the test
        if it ends first or does not within ``timeout_s``."""

        def logged() -> bool:
            assert self.popen.poll() is None, f"{self.name} exited:\n{self.log()}"
            return text in self.log()

        wait_for(logged, timeout_s, what=f"{self.name} to log {text!r}")

    def status(self) -> str:
        """``running`` or ``exited N``."""
        code = self.popen.poll()
        return "running" if code is None else f"exited {code}"

    def stop(self, timeout_s: float = 15.0) -> int:
        """SIGTERM it (a graceful stop); its exit code."""
        self.popen.send_signal(signal.SIGTERM)
        return self.wait(timeout_s)


class Pandamq:
    """Runs ``pandamq`` against one RabbitMQ vhost and one database, work in ``tmp_path``."""

    def __init__(self, broker_url: str, database_url: str, tmp_path: Path) -> None:
        self.database_url = database_url
        self.tmp_path = tmp_path
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PANDAMQ_")}
        self.env |= {
            "PANDAMQ_BROKER_URL": broker_url,
            "PANDAMQ_DATABASE_URL": database_url,
            "PANDAMQ_WORK_DIR": str(tmp_path / "work"),
            "PANDAMQ_DDM_ROOT": str(tmp_path / "se"),
            # Retries set up at once; tests of the backoff ask for one.
            "PANDAMQ_RETRY_BACKOFF_S": "0",
            # A stuck service killed with SIGABRT writes every thread's stack to its log.
            "PYTHONFAULTHANDLER": "1",
        }
        self.services: list[Service] = []

    def run(
        self, *args: str, timeout_s: float = 60.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a command to its end; with ``check``, fail the test unless it exits 0."""
        result = subprocess.run(
            [PANDAMQ, *args],
            check=False,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if check:
            assert result.returncode == 0, self.explain(result)
        return result

    def json(self, *args: str) -> Any:
        """The parsed output of a command run with ``--json``."""
        return json.loads(self.run(*args, "--json").stdout)

    def new_site(self) -> str:
        """Upgrade the database and add a site no other test uses; its name."""
        self.run("db", "upgrade")
        site = f"SITE_{uuid.uuid4().hex[:8].upper()}"
        self.run("sites", "add", site)
        return site

    def spec_file(self, specs: list[dict[str, Any]]) -> Path:
        """A new JSON file with a list of job specs."""
        path = self.tmp_path / f"jobs-{uuid.uuid4().hex[:8]}.json"
        path.write_text(json.dumps(specs))
        return path

    def submit(self, specs: list[dict[str, Any]]) -> list[str]:
        """Submit ``specs`` from a JSON file, as a person does (the broker service answers
        each); the job ids printed. A service still starting is waited for."""
        path = str(self.spec_file(specs))
        deadline = time.monotonic() + SERVICE_START_S
        while True:
            result = self.run("submit", path, check=False)
            starting = "is `pandamq serve` running" in result.stderr
            if not starting or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert result.returncode == 0, self.explain(result)
        ids = result.stdout.split()
        assert len(ids) == len(specs), ids
        return ids

    def publish(self, specs: list[dict[str, Any]]) -> list[str]:
        """Put submissions in the submit queue without waiting for any answer (no broker
        service need run yet); their ids."""
        settings = Settings.load(environ={k: v for k, v in self.env.items() if v is not None})
        filled = [decode(JobSpec, {**spec, "id": uuid.uuid4().hex}) for spec in specs]
        publish_specs(settings, filled)
        return [spec.id for spec in filled]

    def start(self, *args: str, env: dict[str, str] | None = None) -> Service:
        """Start a long-running command (``serve``, ``pilot``)."""
        name = f"{args[0]}-{len(self.services)}"
        stdout_path = self.tmp_path / f"{name}.stdout"
        stderr_path = self.tmp_path / f"{name}.stderr"
        with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
            popen = subprocess.Popen(
                [PANDAMQ, *args],
                env={**self.env, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
        service = Service(name, popen, stdout_path, stderr_path)
        self.services.append(service)
        return service

    def states(self, ids: list[str]) -> dict[str, str]:
        """Each job's state, read from SQL."""
        engine = open_engine(self.database_url)
        try:
            with transaction(engine) as conn:
                return states_of(conn, ids)
        finally:
            engine.dispose()

    def wait_states(self, ids: list[str], states: list[str], timeout_s: float = 60.0) -> None:
        """Wait until the jobs are in ``states`` (as a sorted list); fail with the logs if not."""

        def reached() -> bool:
            self.check_services()
            return sorted(self.states(ids).values()) == sorted(states)

        try:
            wait_for(reached, timeout_s, what=f"jobs in states {sorted(states)}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {self.states(ids)}\n{self.logs()}") from None

    def check_services(self) -> None:
        """Fail the test if a service ended before the test waited for it."""
        for s in self.services:
            if not s.awaited and s.popen.poll() is not None:
                raise AssertionError(f"{s.name} exited {s.popen.returncode}:\n{s.log()}")

    def explain(self, result: subprocess.CompletedProcess[str]) -> str:
        """A failed command, with the logs of the services."""
        return (
            f"{' '.join(map(str, result.args))} exited {result.returncode}\n"
            f"stdout: {result.stdout}\nstderr: {result.stderr}\n{self.logs()}"
        )

    def logs(self) -> str:
        """Every service's state and log, for a failure message."""
        return "\n".join(f"--- {s.name} ({s.status()}) log:\n{s.log()}" for s in self.services)

    def close(self) -> None:
        """Stop what still runs: SIGTERM; if stuck, SIGABRT (its stacks go to its log), SIGKILL."""
        running = [s for s in self.services if s.popen.poll() is None]
        for s in running:
            s.popen.terminate()
        stuck = [s for s in running if not _ends(s.popen, CLOSE_GRACE_S)]
        for s in stuck:
            s.popen.send_signal(signal.SIGABRT)
            if not _ends(s.popen, CLOSE_GRACE_S):
                s.popen.kill()
                s.popen.wait()
            print(f"{s.name} did not stop on SIGTERM; its log:\n{s.log()}")


def _ends(popen: subprocess.Popen[bytes], timeout_s: float) -> bool:
    try:
        popen.wait(timeout_s)
    except subprocess.TimeoutExpired:
        return False
    return True


@contextmanager
def pandamq_processes(services: tuple[str, str], tmp_path: Path) -> Iterator[Pandamq]:
    """A ``Pandamq`` on the session's vhost and database; its processes killed at the end."""
    broker_url, database_url = services
    processes = Pandamq(broker_url, database_url, tmp_path)
    try:
        yield processes
    finally:
        processes.close()
