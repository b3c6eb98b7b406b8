"""The submitting side: read job specs, check them, publish them with confirms,
and follow jobs to the end. Used by ``pandamq submit``, the demo and the tests."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import yaml
from kombu import Queue
from sqlalchemy import Engine, select

from broker import topology
from broker.errors import BadInput, NotFound, SpecError, UnknownSite
from broker.messaging.connection import broker_errors, connect
from broker.messaging.publisher import Outgoing, open_publisher
from broker.protocol import JobSpec, TaskSpec, decode, encode
from broker.security import identity
from broker.settings import Settings
from broker.states import FINAL_STATES
from broker.store.datasets import dataset_files
from broker.store.engine import transaction
from broker.store.jobs import known_tasks, states_of
from broker.store.schema import datasets
from broker.store.sites import known_sites
from broker.store.tasks import taken_datasets


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


def check_task(engine: Engine, task: TaskSpec) -> None:
    """Refuse a task whose id is taken, whose input dataset is unknown, whose output or
    log dataset exists already, or whose sites are not known."""
    with transaction(engine) as conn:
        taken = known_tasks(conn, [task.id])
        outputs = taken_datasets(conn, task)
        files = dataset_files(conn, task.input_dataset)
        exists = conn.execute(
            select(datasets.c.name).where(datasets.c.name == task.input_dataset)
        ).first()
        sites = known_sites(conn, task.sites)
    if taken:
        raise BadInput(f"task spec: task {task.id!r} exists already")
    if exists is None:
        raise NotFound(f"task spec: input dataset {task.input_dataset!r} does not exist")
    if not files:
        raise BadInput(f"task spec: input dataset {task.input_dataset!r} has no files")
    if outputs:
        raise BadInput(f"task spec: dataset {outputs[0]!r} exists already")
    unknown = sorted(set(task.sites) - set(sites))
    if unknown:
        raise UnknownSite(f"task spec: site(s) {', '.join(unknown)} not in the site catalogue")


def publish_task(settings: Settings, task: TaskSpec) -> None:
    """Publish a task submission; return once the message broker has confirmed it."""
    queue = topology.Topology(settings.queue_type).tasks_queue()
    publish_to(settings, queue, [encode(task)])


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


def check_references(engine: Engine, specs: Sequence[JobSpec]) -> None:
    """Refuse specs naming a site that is unknown or offline, or a task that does not exist."""
    with transaction(engine) as conn:
        sites = known_sites(conn, {s.site for s in specs if s.site})
        tasks = known_tasks(conn, {s.task_id for s in specs if s.task_id})
    for spec in specs:
        if spec.site and spec.site not in sites:
            raise UnknownSite(
                f"job spec: site {spec.site!r} is not in the site catalogue "
                "(see `pandamq sites`; add it with `pandamq sites add`)"
            )
        if spec.site and sites[spec.site] == "offline":
            raise BadInput(f"job spec: site {spec.site!r} is offline and takes no jobs")
        if spec.task_id and spec.task_id not in tasks:
            raise NotFound(f"job spec: task {spec.task_id!r} does not exist")


def publish_specs(settings: Settings, specs: Sequence[JobSpec]) -> None:
    """Publish submissions; return once the message broker has confirmed every one."""
    queue = topology.Topology(settings.queue_type).submit_queue()
    publish_to(settings, queue, [encode(s) for s in specs])


def publish_to(settings: Settings, queue: Queue, bodies: Sequence[bytes]) -> None:
    """Declare ``queue`` and publish ``bodies`` to it through its exchange, with confirms."""
    with connect(settings) as connection, broker_errors(connection, f"publishing to {queue.name}"):
        topology.declare(connection.default_channel, [queue])
        publisher = open_publisher(
            connection, settings.publish_window, settings.confirm_timeout_s, identity.of(settings)
        )
        publisher.publish(Outgoing(queue.exchange.name, queue.routing_key, b) for b in bodies)


def follow(
    engine: Engine,
    ids: Sequence[str],
    timeout_s: float | None = None,
    on_progress: Callable[[dict[str, str]], None] | None = None,
    interval_s: float = 0.5,
) -> dict[str, str]:
    """Poll SQL until every job is final (or ``timeout_s``); their last states."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        with transaction(engine) as conn:
            states = states_of(conn, ids)
        if on_progress is not None:
            on_progress(states)
        if len(states) == len(ids) and all(s in FINAL_STATES for s in states.values()):
            return states
        if deadline is not None and time.monotonic() > deadline:
            return states
        time.sleep(interval_s)
