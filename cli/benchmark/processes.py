"""The processes a benchmark starts: broker services and pilots, each a real
``pandamq`` command, with their logs in files and their peak memory read
from ``/proc`` before they stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from broker.errors import PermanentError
from broker.settings import Settings

PANDAMQ = str(Path(sys.executable).parent / "pandamq")
STOP_GRACE_S = 20.0


@dataclass
class Process:
    """One ``pandamq`` process and its log file."""

    kind: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def peak_rss_mb(self) -> float:
        """Its peak resident memory (``VmHWM``), in MiB; 0 once it has ended."""
        try:
            status = Path(f"/proc/{self.popen.pid}/status").read_text()
        except OSError:
            return 0.0
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def cpu_seconds(self) -> float:
        """CPU time it has used so far (user and system), in seconds; 0 once it has ended."""
        try:
            fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        # utime and stime: fields 14 and 15 of stat(5), counted after the command's ")".
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log(self) -> str:
        """What it has logged."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after a grace period; its exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait()


def ended(process: Process) -> PermanentError:
    """The error for a process of the benchmark that ended on its own."""
    return PermanentError(
        f"a {process.kind} process ended (exit {process.popen.poll()}); "
        f"the end of its log ({process.log_path}):\n{process.log()[-2000:]}"
    )


def environment(settings: Settings, work_dir: Path) -> dict[str, str]:
    """The environment of a child: this run's broker, database and work directory (other
    ``PANDAMQ_*`` settings pass through, to tune the services under test)."""
    return dict(os.environ) | {
        "PANDAMQ_BROKER_URL": settings.broker_url,
        "PANDAMQ_DATABASE_URL": settings.database_url,
        "PANDAMQ_QUEUE_TYPE": settings.queue_type,
        "PANDAMQ_WORK_DIR": str(work_dir / "work"),
        "PANDAMQ_LOG_LEVEL": os.environ.get("PANDAMQ_LOG_LEVEL", "WARNING"),
    }


def start(kind: str, args: list[str], env: dict[str, str], log_dir: Path, n: int) -> Process:
    """Start ``pandamq ARGS``; its output goes to ``log_dir/<kind>-<n>.log``."""
    log_path = log_dir / f"{kind}-{n}.log"
    with log_path.open("wb") as log_file:
        popen = subprocess.Popen(
            [PANDAMQ, *args], env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file
        )
    return Process(kind, popen, log_path)


def start_brokers(
    env: dict[str, str], log_dir: Path, count: int, ready: Callable[[], bool], timeout_s: float
) -> list[Process]:
    """``count`` broker services, returned once ``ready()`` says they all consume."""
    brokers = [start("broker", ["serve", "broker"], env, log_dir, n) for n in range(count)]
    deadline = time.monotonic() + timeout_s
    while not ready():
        ended = [b for b in brokers if b.popen.poll() is not None]
        if ended or time.monotonic() > deadline:
            for b in brokers:
                b.stop()
            culprit = (ended or brokers)[0]
            raise PermanentError(
                f"a broker service did not start within {timeout_s:.0f} s; "
                f"the end of its log ({culprit.log_path}):\n{culprit.log()[-2000:]}"
            )
        time.sleep(0.2)
    return brokers
