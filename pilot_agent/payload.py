"""Run a job's payload command in a subprocess, in its own work directory."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from broker.errors import PandaMQError
from broker.protocol import JobSpec

STDERR_TAIL_CHARS = 2000
PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1024 * 1024
#: How long one look for the payload's end waits before the next.
POLL_S = 0.05


@dataclass(frozen=True)
class Usage:
    """What a payload used, as its job's end event reports it."""

    peak_rss_mb: int
    cpu_time_s: float
    wall_time_s: float


def payload_environment() -> dict[str, str]:
    """The pilot's environment without its ``PANDAMQ_*`` settings: a payload is the user's
    code and gets neither the broker URL (and its password) nor the pilot's key files."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PANDAMQ_")}


class PayloadNotStarted(PandaMQError):
    """The payload command could not be started."""


class Payload:
    """A running payload: ``/bin/sh -c command`` in its own process group."""

    def __init__(self, spec: JobSpec, work_dir: Path) -> None:
        work_dir.mkdir(parents=True, exist_ok=True)
        self.work_dir = work_dir
        self.stdout_path = work_dir / "payload.stdout"
        self.stderr_path = work_dir / "payload.stderr"
        env = {**payload_environment(), **spec.environment, "PANDAMQ_JOB_ID": spec.id}
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
        self._started = time.monotonic()
        # The kernel's peak of a process starts from that of the process it was forked
        # from (the pilot) and survives exec: below this floor it says nothing of the payload.
        self._inherited_mb = own_peak_mb()
        self._ended: float | None = None
        self._peak_mb = 0
        self._cpu_s = 0.0

    def wait(self, timeout_s: float) -> int | None:
        """The exit code, or None if still running after ``timeout_s``.

        The payload is reaped with ``wait4`` rather than by ``Popen``, for the CPU
        time and peak memory the kernel kept of it and the children it waited for.
        """
        deadline = time.monotonic() + timeout_s
        while self._process.returncode is None:
            if self._reap(os.WNOHANG):
                break
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(POLL_S, left))
        return self._process.returncode

    def _reap(self, options: int) -> bool:
        """Reap the payload's process if it ended (``options``: ``WNOHANG`` or 0)."""
        try:
            pid, status, usage = os.wait4(self._process.pid, options)
        except ChildProcessError:  # reaped elsewhere: no usage to read
            self._process.returncode = self._process.wait()
            self._ended = time.monotonic()
            return True
        if pid == 0:
            return False
        self._process.returncode = os.waitstatus_to_exitcode(status)
        self._ended = time.monotonic()
        self._cpu_s = usage.ru_utime + usage.ru_stime
        kernel_peak_mb = usage.ru_maxrss // 1024  # ru_maxrss is in KB
        if kernel_peak_mb > self._inherited_mb:
            self._peak_mb = max(self._peak_mb, kernel_peak_mb)
        return True

    def usage(self) -> Usage:
        """What the payload used: peak memory, CPU and wall time.

        The peak is the kernel's where it rose above the pilot's own (which a forked
        process inherits), else the largest sampled (``rss_mb``).
        """
        end = self._ended if self._ended is not None else time.monotonic()
        return Usage(self._peak_mb, round(self._cpu_s, 3), round(end - self._started, 3))

    def stop(self, grace_s: float) -> int:
        """TERM the payload's process group, KILL it after ``grace_s``; the exit code."""
        self._signal(signal.SIGTERM)
        code = self.wait(grace_s)
        if code is None:
            self._signal(signal.SIGKILL)
            self._reap(0)
            code = self._process.returncode
            assert code is not None
        return code

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, sig)

    def rss_mb(self) -> int:
        """Resident memory of every process of the payload (its session), in MB; the
        largest measured is its peak."""
        used = sum(_rss_pages(pid) for pid in _session_members(self._process.pid)) * PAGE // MB
        self._peak_mb = max(self._peak_mb, used)
        return used

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


def own_peak_mb() -> int:
    """This process's peak resident memory (``VmHWM``), in MB; 0 if unknown."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return 0
