"""A real single-node Slurm on this machine for the tests: munged, slurmctld and slurmd.

Needs root and Debian's ``slurm-wlm`` and ``munge`` (``.ci/run`` installs them).
Everything but munged's socket lives in a directory of the test session's own;
the daemons listen on free ports, and are stopped with every job they ran.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.harness import wait_for

MUNGE_DIR = Path("/run/munge")
MUNGE_PID = MUNGE_DIR / "munged.pid"

CONFIG = """\
ClusterName=pandamq-test
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
{node} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def missing() -> str | None:
    """Why a Slurm cannot be started here, or None."""
    if os.geteuid() != 0:
        return "starting slurmctld and slurmd needs root"
    absent = [c for c in ("munged", "slurmctld", "slurmd", "sbatch") if shutil.which(c) is None]
    if absent:
        return f"{', '.join(absent)} not installed (apt-get install -y slurm-wlm munge)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(*command: str) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True, timeout=60).stdout


def _munge_works() -> bool:
    try:
        token = _run("munge", "-n")
    except subprocess.CalledProcessError:
        return False
    return (
        subprocess.run(
            ["unmunge"], check=False, input=token, capture_output=True, text=True
        ).returncode
        == 0
    )


def _stop_pid_file(path: Path) -> None:
    if not path.exists():
        return
    pid = int(path.read_text().split()[0])
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.1)


class SlurmCluster:
    """One node that is its own controller, configured in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.config = directory / "slurm.conf"
        self._started_munged = False

    @property
    def env(self) -> dict[str, str]:
        """What Slurm's commands need to find this cluster."""
        return {"SLURM_CONF": str(self.config)}

    def start(self) -> None:
        """munged (unless one runs), then slurmctld and slurmd; wait until the node is idle."""
        self._start_munged()
        for sub in ("state", "spool"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        node = _run("slurmd", "-C").splitlines()[0]
        host = node.split()[0].removeprefix("NodeName=")
        self.config.write_text(
            CONFIG.format(
                host=host,
                ctld_port=_free_port(),
                slurmd_port=_free_port(),
                dir=self.dir,
                node=node,
            )
        )
        _run("slurmctld", "-c", "-f", str(self.config))
        _run("slurmd", "-f", str(self.config))
        wait_for(lambda: self.sinfo() == "idle", 60, "the Slurm node to be idle")

    def _start_munged(self) -> None:
        if _munge_works():
            return
        MUNGE_DIR.mkdir(exist_ok=True)
        shutil.chown(MUNGE_DIR, "munge", "munge")
        _run("runuser", "-u", "munge", "--", "munged")
        self._started_munged = True
        wait_for(_munge_works, 30, "munged")

    def ask(self, *command: str) -> str:
        """The output of a Slurm command about this cluster (empty if it failed)."""
        done = subprocess.run(
            command,
            check=False,
            capture_output=True,
            text=True,
            env={**os.environ, **self.env},
            timeout=30,
        )
        return done.stdout.strip()

    def sinfo(self) -> str:
        """The node's state, as ``sinfo`` says it."""
        return self.ask("sinfo", "--noheader", "--format=%T")

    def squeue(self) -> str:
        """Jobs not ended yet, one a line."""
        return self.ask("squeue", "--noheader", "--format=%i %T")

    def stop(self) -> None:
        """Cancel every job, stop slurmd and slurmctld, and munged if this cluster started it."""
        self.ask("scancel", "--user=root")
        wait_for(lambda: not self.squeue(), 60, "cancelled Slurm jobs to end")
        _stop_pid_file(self.dir / "slurmd.pid")
        _stop_pid_file(self.dir / "slurmctld.pid")
        if self._started_munged:
            _stop_pid_file(MUNGE_PID)
