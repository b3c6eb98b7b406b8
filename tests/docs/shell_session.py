"""Runs the commands of shell examples as a person at a terminal would.

Commands run one after another in one directory, with the environment the ones before
left (every variable a command sets is kept, as in one shell). A command that runs until
it is stopped (``pandamq serve``, a pilot) is started in the background, as in a terminal
of its own, and the next command waits until it says it is ready; one that takes the
terminal (``pandamq top``) gets one, and is left with its key. Every command must exit 0.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from cli.top import QUIT_HINT
from tests.budget import Budget
from tests.docs.markdown import Command

#: Commands that run until stopped, and what each logs once the next command may
#: count on it (the longest prefix of a command wins).
BACKGROUND = {
    "pandamq serve monitor": "monitor on http://",
    "pandamq serve": "broker service ready on ",
    "pandamq pilot": " serving ",
}
#: Commands that take the terminal: what each shows once it is up, and the key that ends it.
INTERACTIVE = {"pandamq top": (QUIT_HINT, "q")}
#: Variables of the shell itself, not of the commands.
SHELL_VARIABLES = {"_", "PWD", "OLDPWD", "SHLVL"}
#: How long a background command gets to stop on SIGTERM, at the end.
STOP_GRACE_S = 15.0


@dataclass
class Background:
    """A command started in a terminal of its own."""

    command: Command
    popen: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def explain(self) -> str:
        state = self.popen.poll()
        status = "running" if state is None else f"exited {state}"
        return f"--- {self.command.where} `{self.command.text}` ({status}):\n{self.output()}"


@dataclass
class ShellSession:
    """One person's terminal: a directory, an environment, and what runs in the background."""

    directory: Path
    logs: Path
    env: dict[str, str]
    budget: Budget
    substitutions: dict[str, str] = field(default_factory=dict)
    background: list[Background] = field(default_factory=list)

    def run(self, command: Command) -> None:
        """Run one command of an example; fail the test, with every log, if it fails."""
        text = self.substituted(command.text)
        if _kind(text, BACKGROUND) is not None:
            self._start(command, text)
        elif (key := _kind(text, INTERACTIVE)) is not None:
            self._interact(command, text, *INTERACTIVE[key])
        else:
            self._foreground(command, text)

    def substituted(self, text: str) -> str:
        """The command with this run's names (vhost, database, ports) for the document's."""
        for written, here in self.substitutions.items():
            text = text.replace(written, here)
        return text

    def _foreground(self, command: Command, text: str) -> None:
        env_file = self.logs / "env"
        script = f"set -euo pipefail -a\n{text}\nenv -0 > {env_file}\n"
        try:
            done = subprocess.run(
                ["bash", "--noprofile", "--norc", "-c", script],
                cwd=self.directory,
                env=self.env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=self.budget.left(),
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            self.fail(command, f"still running after {exc.timeout:.0f} s")
        if done.returncode != 0:
            self.fail(command, f"exited {done.returncode}\n{done.stdout}{done.stderr}")
        self.env = _read_env(env_file)

    def _start(self, command: Command, text: str) -> None:
        log = self.logs / f"background-{len(self.background)}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                ["bash", "--noprofile", "--norc", "-c", f"exec {text}"],
                cwd=self.directory,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started = Background(command, popen, log)
        self.background.append(started)
        ready = BACKGROUND[_kind(text, BACKGROUND) or ""]
        while ready not in started.output():
            if popen.poll() is not None:
                self.fail(command, "ended before it was ready")
            if self.budget.left() <= 0.1:
                self.fail(command, f"did not log {ready!r} in time")
            time.sleep(0.1)

    def _interact(self, command: Command, text: str, shows: str, key: str) -> None:
        controller, terminal = pty.openpty()
        popen = subprocess.Popen(
            ["bash", "--noprofile", "--norc", "-c", f"exec {text}"],
            cwd=self.directory,
            env=self.env,
            stdin=terminal,
            stdout=terminal,
            stderr=terminal,
            start_new_session=True,
        )
        os.close(terminal)
        try:
            screen = _read_until(controller, shows.encode(), popen, self.budget)
            if shows.encode() not in screen:
                self.fail(command, f"did not show {shows!r}:\n{screen.decode(errors='replace')}")
            os.write(controller, key.encode())
            code = popen.wait(self.budget.wait_s(STOP_GRACE_S))
            if code != 0:
                self.fail(command, f"exited {code} on {key!r}")
        except subprocess.TimeoutExpired:
            self.fail(command, f"did not end on {key!r}")
        finally:
            _kill(popen)
            os.close(controller)

    def finish(self) -> None:
        """Every background command still runs, and stops with exit 0 on SIGTERM."""
        for started in self.background:
            if started.popen.poll() is not None:
                self.fail(started.command, "ended before the end of its document")
        for started in self.background:
            os.killpg(started.popen.pid, signal.SIGTERM)
        for started in self.background:
            try:
                code = started.popen.wait(self.budget.wait_s(STOP_GRACE_S))
            except subprocess.TimeoutExpired:
                self.fail(started.command, "did not stop on SIGTERM")
            if code != 0:
                self.fail(started.command, f"exited {code} on SIGTERM")
        self.background = []

    def close(self) -> None:
        """Kill whatever still runs (after a failure)."""
        for started in self.background:
            _kill(started.popen)
        self.background = []

    def fail(self, command: Command, why: str) -> None:
        """Fail the test: which command, why, and the log of every background command."""
        logs = "\n".join(b.explain() for b in self.background if b.command != command)
        own = next((b.explain() for b in self.background if b.command == command), "")
        raise AssertionError(f"{command.where}: `{command.text}` {why}\n{own}\n{logs}")


def _kind(text: str, table: dict[str, object]) -> str | None:
    """The longest key of ``table`` the command starts with."""
    words = text.split()
    matches = [k for k in table if words[: len(k.split())] == k.split()]
    return max(matches, key=len, default=None)


def _read_env(path: Path) -> dict[str, str]:
    pairs = (item.split("=", 1) for item in path.read_text().split("\0") if "=" in item)
    return {k: v for k, v in pairs if k not in SHELL_VARIABLES}


def _read_until(fd: int, wanted: bytes, popen: subprocess.Popen[bytes], budget: Budget) -> bytes:
    seen = b""
    while wanted not in seen and popen.poll() is None and budget.left() > 0.1:
        ready, _, _ = select.select([fd], [], [], min(budget.left(), 0.5))
        if ready:
            try:
                seen += os.read(fd, 4096)
            except OSError:  # the terminal closed: the command ended
                break
    return seen


def _kill(popen: subprocess.Popen[bytes]) -> None:
    if popen.poll() is None:
        os.killpg(popen.pid, signal.SIGKILL)
    popen.wait()
