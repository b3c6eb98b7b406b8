"""Pilots as processes on this machine: the embedded batch system.

A pilot's batch id is its process id. Pilots are processes of their own,
so they need a message broker other processes can reach (RabbitMQ, not
``memory://``). Their output goes to ``<work_dir>/pilots/<pilot_id>.log``.
"""

from __future__ import annotations

import signal
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
from broker.settings import Settings


class LocalSubmitter:
    """Starts pilots with ``subprocess``; knows the processes it started."""

    name = "local"

    def __init__(self, settings: Settings) -> None:
        if settings.broker_url.startswith("memory://"):
            raise ConfigError(
                "the local batch system starts pilots as processes: memory:// is private "
                "to one process, use RabbitMQ (broker_url amqp:// or amqps://)"
            )
        self._settings = settings
        self._logs = Path(settings.work_dir) / "pilots"
        self._processes: dict[str, subprocess.Popen[bytes]] = {}

    def submit(self, shape: SlotShape, pilot_ids: Sequence[str]) -> list[str]:
        """Start one pilot process per id."""
        self._logs.mkdir(parents=True, exist_ok=True)
        env = {**inherited_environment(), **pilot_environment(self._settings)}
        return [self._start(shape, pilot_id, env) for pilot_id in pilot_ids]

    def _start(self, shape: SlotShape, pilot_id: str, env: dict[str, str]) -> str:
        command = pilot_command(self._settings, shape, pilot_id)
        try:
            with open(self._logs / f"{pilot_id}.log", "ab") as log:
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
        except OSError as exc:
            raise BatchSystemUnavailable(f"cannot start {command[0]}: {exc.strerror}") from exc
        batch_id = str(process.pid)
        self._processes[batch_id] = process
        return batch_id

    def poll(self, batch_ids: Sequence[str]) -> dict[str, BatchStatus]:
        """Running, or ended with its exit code; a process this factory did not start is missed."""
        statuses = {}
        for batch_id in batch_ids:
            process = self._processes.get(batch_id)
            if process is None:
                continue
            code = process.poll()
            if code is None:
                statuses[batch_id] = BatchStatus(PilotState.RUNNING)
            else:
                del self._processes[batch_id]
                state = PilotState.FINISHED if code == 0 else PilotState.FAILED
                statuses[batch_id] = BatchStatus(state, code)
        return statuses

    def cancel(self, batch_ids: Sequence[str]) -> None:
        """SIGTERM: the pilot ends its payload and reports, as under a batch system's cancel."""
        for batch_id in batch_ids:
            process = self._processes.get(batch_id)
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)


def submitter(settings: Settings) -> LocalSubmitter:
    """The local batch system."""
    return LocalSubmitter(settings)
