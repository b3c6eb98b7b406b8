"""Run a job's payload command in a subprocess, in its own work directory."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

from broker.errors import PandaMQError
from broker.protocol import JobSpec

STDERR_TAIL_CHARS = 2000
PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1024 * 1024


class PayloadNotStarted(PandaMQError):
    """The payload command could not be started."""


class Payload:
    """A running payload: ``/bin/sh -c command`` in its own process group."""

    def __init__(self, spec: JobSpec, work_dir: Path) -> None:
        work_dir.mkdir(parents=True, exist_ok=True)
        self.work_dir = work_dir
        self.stdout_path = work_dir / "payload.stdout"
        self.stderr_path = work_dir / "payload.stderr"
        env = {**os.environ, **spec.environment, "PANDAMQ_JOB_ID": spec.id}
        try:
            with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
                self._process = subprocess.Popen(
                    ["/bin/sh", "-c", spec.command],
                    cwd=work_dir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                )
        except OSError as exc:
            raise PayloadNotStarted(f"cannot start payload in {work_dir}: {exc}") from exc

    def wait(self, timeout_s: float) -> int | None:
        """The exit code, or None if still running after ``timeout_s``."""
        try:
            return self._process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace_s: float) -> int:
        """TERM the payload's process group, KILL it after ``grace_s``; the exit code."""
        self._signal(signal.SIGTERM)
        code = self.wait(grace_s)
        if code is None:
            self._signal(signal.SIGKILL)
            code = self._process.wait()
        return code

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, sig)

    def rss_mb(self) -> int:
        """Resident memory of every process of the payload (its session), in MB."""
        return sum(_rss_pages(pid) for pid in _session_members(self._process.pid)) * PAGE // MB

    def stderr_tail(self) -> str:
        """The last characters the payload wrote to stderr."""
        try:
            data = self.stderr_path.read_bytes()[-STDERR_TAIL_CHARS:]
        except OSError:
            return ""
        return data.decode("utf-8", "replace").strip()


def _session_members(session: int) -> list[int]:
    """Processes whose session is ``session`` (the payload runs in its own)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # the process ended meanwhile
            # fields after the command name, which may contain spaces: state ppid pgrp session
            if int(stat.rsplit(")", 1)[1].split()[3]) == session:
                members.append(int(entry.name))
    return members


def _rss_pages(pid: int) -> int:
    try:
        return int((Path("/proc") / str(pid) / "statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
