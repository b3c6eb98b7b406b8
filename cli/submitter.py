"""The submitting side: read job and task specs from JSON or YAML, and follow
jobs to their end from the endings the broker service publishes. Used by
``pandamq submit``, ``kill --wait``, ``retry --wait`` and ``watch``.

Nothing here opens the database: the checks against the catalogue (does the
site exist, is the task known) are the broker service's, answered per spec.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

import click
import yaml
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from broker.api import JobEnding, TaskEnding
from broker.client import Client
from broker.client.follow import Follower
from broker.errors import SpecError
from broker.protocol import JobSpec, TaskSpec, decode
from broker.states import FINAL_STATES

#: Off a terminal, how often waiting prints how far it got.
PLAIN_PROGRESS_S = 5.0


def parse_specs(text: str, source: str) -> list[JobSpec]:
    """Job specs from JSON or YAML text: one object or a list of them; ids filled in."""
    if not text.strip():
        raise SpecError(f"{source}: the file is empty; expected a job spec or a list of them")
    document = _parse(text, source)
    items = [] if document is None else document if isinstance(document, list) else [document]
    if not items:
        raise SpecError(f"{source}: no job spec in the file")
    specs = []
    for n, item in enumerate(items):
        try:
            spec = decode(JobSpec, item)
        except SpecError as exc:
            where = f"{source}" if len(items) == 1 else f"{source} item {n + 1}"
            raise SpecError(f"{where}: {exc}") from exc
        specs.append(spec if spec.id else replace(spec, id=uuid.uuid4().hex))
    return specs


def parse_task(text: str, source: str) -> TaskSpec | None:
    """A task spec, if the document is one (a mapping with ``input_dataset``); its id filled in."""
    document = _parse(text, source) if text.strip() else None
    if not isinstance(document, dict) or "input_dataset" not in document:
        return None
    try:
        task = decode(TaskSpec, document)
    except SpecError as exc:
        raise SpecError(f"{source}: {exc}") from exc
    return task if task.id else replace(task, id=uuid.uuid4().hex)


def _parse(text: str, source: str) -> Any:
    stripped = text.lstrip()
    if source.endswith(".json") or stripped.startswith(("{", "[")):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise SpecError(f"{source}: not valid JSON: {exc}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0]
        raise SpecError(f"{source}: neither JSON nor valid YAML: {first}") from exc


def follow(
    client: Client,
    ids: Sequence[str],
    timeout_s: float | None = None,
    follower: Follower | None = None,
    on_ending: Callable[[JobEnding], None] | None = None,
) -> dict[str, JobEnding]:
    """Follow jobs until each has ended (or ``timeout_s``), showing progress; their endings."""
    ended: dict[str, JobEnding] = {}
    with _Progress(len(ids), "jobs ended") as show:
        for ending in client.watch(ids, timeout_s=timeout_s, follower=follower):
            if isinstance(ending, JobEnding):
                ended[ending.job_id] = ending
                if on_ending is not None:
                    on_ending(ending)
            show(len(ended))
    return ended


def follow_task(client: Client, task_id: str, timeout_s: float | None) -> TaskEnding | None:
    """Follow a task until it ends (or ``timeout_s``), showing its jobs' progress."""
    task = client.task(task_id)
    total = int(task.get("jobs") or 0)
    done = sum(n for s, n in task.get("jobs_by_state", {}).items() if s in FINAL_STATES)
    with _Progress(total, f"jobs of task {task_id} ended") as show:
        show(done)
        for ending in client.watch(task_id=task_id, timeout_s=timeout_s):
            if isinstance(ending, TaskEnding):
                return ending
            done += 1
            show(min(done, total))
    return None


class _Progress:
    """A live bar on a terminal; elsewhere a line on stderr every few seconds."""

    def __init__(self, total: int, what: str) -> None:
        self._total = total
        self._what = what
        self._live = sys.stderr.isatty()
        # The first plain line comes after a while: a short wait prints nothing.
        self._last = time.monotonic()
        columns = (TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        self._bar = Progress(*columns, transient=True, disable=not self._live)
        self._task = self._bar.add_task(what, total=total)

    def __enter__(self) -> Callable[[int], None]:
        self._bar.__enter__()
        return self._show

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(None, None, None)

    def _show(self, done: int) -> None:
        self._bar.update(self._task, completed=done)
        if not self._live and time.monotonic() - self._last > PLAIN_PROGRESS_S:
            self._last = time.monotonic()
            click.echo(f"{done}/{self._total} {self._what}", err=True)


def not_done(ids: Iterable[str], ended: dict[str, JobEnding], client: Client) -> dict[str, str]:
    """The jobs of ``ids`` that have not ended, with their state now (for the message)."""
    waiting = [i for i in ids if i not in ended]
    if not waiting:
        return {}
    now = client.states(waiting)
    return {i: now[i].state if i in now else "unknown" for i in waiting}
