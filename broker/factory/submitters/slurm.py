"""Pilots as Slurm jobs: ``sbatch`` a generated script; ``squeue``, ``scontrol``, ``scancel``.

Each pilot is one Slurm job named ``pandamq-pilot`` whose script exports the
pilot's settings and starts the pilot with the slot's cores and memory,
under the slot's walltime. The script starts the pilot bundle when
``factory_pilot_bundle`` names one (on a filesystem the worker nodes see),
else this installation's ``python -m pilot_agent``. Scripts and pilot output
are kept in ``<work_dir>/pilots/slurm``.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path

from broker.errors import BatchSystemUnavailable, ConfigError
from broker.factory.submitter import (
    BatchStatus,
    PilotState,
    SlotShape,
    inherited_environment,
    pilot_command,
    pilot_environment,
)
from broker.security.secrets import write_private
from broker.settings import Settings

JOB_NAME = "pandamq-pilot"
COMMAND_TIMEOUT_S = 60.0

#: Slurm job states (squeue's long names) as pilot states.
STATES = {
    "PENDING": PilotState.SUBMITTED,
    "CONFIGURING": PilotState.SUBMITTED,
    "REQUEUED": PilotState.SUBMITTED,
    "RUNNING": PilotState.RUNNING,
    "COMPLETING": PilotState.RUNNING,
    "SUSPENDED": PilotState.RUNNING,
    "COMPLETED": PilotState.FINISHED,
    "CANCELLED": PilotState.CANCELLED,
}
EXIT_CODE = re.compile(r"\bExitCode=(\d+):(\d+)")


def run(command: list[str]) -> str:
    """Run a Slurm command; its output, or ``BatchSystemUnavailable`` with its error line."""
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
            env=inherited_environment(),
        )
    except FileNotFoundError as exc:
        raise ConfigError(f"{command[0]} not found: is Slurm installed on this host?") from exc
    except subprocess.TimeoutExpired as exc:
        raise BatchSystemUnavailable(f"{command[0]} did not answer in {exc.timeout:g} s") from exc
    if done.returncode != 0:
        reason = done.stderr.strip() or f"exit code {done.returncode}"
        raise BatchSystemUnavailable(f"{command[0]} failed: {reason}")
    return done.stdout


def pilot_state(slurm_state: str) -> PilotState:
    """A Slurm job state (``CANCELLED by 0`` included) as a pilot state."""
    return STATES.get(slurm_state.partition(" ")[0], PilotState.FAILED)


def parse_sacct(listing: str) -> dict[str, BatchStatus]:
    """``sacct --parsable2`` lines of ``JobID|State|ExitCode`` as statuses."""
    statuses = {}
    for line in listing.splitlines():
        batch_id, slurm_state, exit_code = [*line.strip().split("|"), "", ""][:3]
        code, _, _ = exit_code.partition(":")
        if batch_id and slurm_state:
            statuses[batch_id] = BatchStatus(pilot_state(slurm_state), int(code) if code else None)
    return statuses


def walltime(seconds: int) -> str:
    """Slurm's ``days-hours:minutes:seconds``."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    return f"{days}-{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"


class SlurmSubmitter:
    """Talks to Slurm through its commands, on the host the factory runs on."""

    name = "slurm"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._dir = Path(settings.work_dir) / "pilots" / "slurm"

    def script(self, shape: SlotShape, pilot_id: str) -> str:
        """The batch script of one pilot."""
        directives = [
            f"--job-name={JOB_NAME}",
            f"--cpus-per-task={shape.cores}",
            f"--mem={shape.memory_mb}M",
            f"--time={walltime(shape.walltime_s)}",
            f"--output={self._dir / pilot_id}.out",
        ]
        if self._settings.slurm_partition:
            directives.append(f"--partition={self._settings.slurm_partition}")
        environment = pilot_environment(self._settings)
        return "\n".join(
            [
                "#!/bin/sh",
                *(f"#SBATCH {d}" for d in directives),
                *(f"export {k}={shlex.quote(v)}" for k, v in environment.items()),
                "exec " + shlex.join(pilot_command(self._settings, shape, pilot_id)),
                "",
            ]
        )

    def submit(self, shape: SlotShape, pilot_ids: Sequence[str]) -> list[str]:
        """``sbatch`` one script per pilot; if one fails, those already taken are cancelled."""
        self._dir.mkdir(parents=True, exist_ok=True)
        batch_ids: list[str] = []
        try:
            for pilot_id in pilot_ids:
                batch_ids.append(self._submit_one(shape, pilot_id))
        except BatchSystemUnavailable:
            # The factory records the whole submission failed: none of it may run.
            self.cancel(batch_ids)
            raise
        return batch_ids

    def _submit_one(self, shape: SlotShape, pilot_id: str) -> str:
        path = self._dir / f"{pilot_id}.sh"
        # The script exports the pilot's settings, a broker URL's password among them.
        write_private(path, self.script(shape, pilot_id).encode())
        # --parsable prints "<job id>" or "<job id>;<cluster>".
        return run(["sbatch", "--parsable", str(path)]).strip().split(";")[0]

    def poll(self, batch_ids: Sequence[str]) -> dict[str, BatchStatus]:
        """States from ``squeue`` (exit codes from ``scontrol``); ``sacct`` for older ones."""
        if not batch_ids:
            return {}
        wanted = set(batch_ids)
        listing = run(
            ["squeue", "--noheader", "--states=all", f"--name={JOB_NAME}", "--format=%i|%T"]
        )
        statuses = {}
        for line in listing.splitlines():
            batch_id, _, slurm_state = line.strip().partition("|")
            if batch_id in wanted:
                state = pilot_state(slurm_state)
                statuses[batch_id] = BatchStatus(state, self._exit_code(batch_id, state))
        forgotten = sorted(wanted - set(statuses))
        return statuses | (self._accounted(forgotten) if forgotten else {})

    def _accounted(self, batch_ids: list[str]) -> dict[str, BatchStatus]:
        """What Slurm's accounting says of jobs ``squeue`` has forgotten (none without it)."""
        command = ["sacct", "--noheader", "--parsable2", "--allocations"]
        try:
            listing = run(
                [*command, f"--jobs={','.join(batch_ids)}", "--format=JobID,State,ExitCode"]
            )
        except BatchSystemUnavailable:
            return {}
        return parse_sacct(listing)

    def _exit_code(self, batch_id: str, state: PilotState) -> int | None:
        """The pilot's exit code (or the signal that ended it) once it has ended."""
        if state in (PilotState.SUBMITTED, PilotState.RUNNING):
            return None
        try:
            found = EXIT_CODE.search(run(["scontrol", "--oneliner", "show", "job", batch_id]))
        except BatchSystemUnavailable:
            return None
        if found is None:
            return None
        code, by_signal = int(found.group(1)), int(found.group(2))
        return code or (128 + by_signal if by_signal else 0)

    def cancel(self, batch_ids: Sequence[str]) -> None:
        """``scancel`` the pilots: Slurm sends them SIGTERM, then SIGKILL."""
        if batch_ids:
            run(["scancel", *batch_ids])


def submitter(settings: Settings) -> SlurmSubmitter:
    """The Slurm batch system."""
    return SlurmSubmitter(settings)
