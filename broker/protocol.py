"""The wire protocol: every message pandamq sends, defined once.

Each message is a frozen dataclass whose fields are its JSON body. ``decode``
validates a body strictly (types, required fields, no unknown fields) and
raises ``SpecError`` with one line naming the field. docs/protocol.md is
checked against these classes by the test suite. Standard library only: the
pilot imports this module.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import operator
import re
import time
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar, get_args, get_origin

from broker.errors import SpecError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

#: A file's name within its scope (the part of a DID after ``scope:``).
FILE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")

#: A task's log dataset is its output dataset's name with this suffix.
LOG_DATASET_SUFFIX = ".log"

#: What a job's log tarball holds, when the payload wrote it (the pilot writes it,
#: ``pandamq job ID --log`` and the monitor read it).
LOG_FILES = ("payload.stdout", "payload.stderr")

#: A task's id: short enough that its jobs' ids (``<task id>-<6 digits>``) are names too.
TASK_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,55}$")

#: How a claim refusal starts when the job needs more than the claiming pilot's slot.
SLOT_TOO_SMALL = "slot too small"

#: The largest integer a message may carry (PostgreSQL's BIGINT); per-field rules go lower.
MAX_INTEGER = 2**63 - 1
#: The largest count a field of an INTEGER column may take (attempts, cores, MB, seconds).
MAX_COUNT = 2**31 - 1
#: How far ahead of the receiver's clock an event's time may be (clocks drift; a year does not).
MAX_CLOCK_AHEAD_S = 3600.0
#: The longest replica location (``FileInfo.pfn``) a message may carry.
MAX_PFN_CHARS = 4096
#: Free texts (a payload's stderr tail) are trimmed to their last this many characters.
MAX_TEXT_CHARS = 10_000

EventKind = Literal["starting", "running", "heartbeat", "finished", "failed", "cancelled"]


@dataclass(frozen=True)
class FileInfo:
    """A file a job reads or writes: its DID parts, GUID, size and adler32 checksum."""

    scope: str
    name: str
    guid: str
    size: int
    adler32: str
    role: Literal["input", "output", "log"] = "input"
    #: For an input in a claim reply: the storage element (RSE) of the job's site holding
    #: the replica the pilot reads, and where the replica is there (path or URL).
    rse: str = ""
    pfn: str = ""

    def check(self) -> None:
        """Rules beyond types."""
        _check_range("size", self.size, 0, MAX_INTEGER, label="FileInfo message")
        _check_name("rse", self.rse, allow_empty=True, label="FileInfo message")
        if len(self.pfn) > MAX_PFN_CHARS:
            raise SpecError(
                f"FileInfo message: field 'pfn' must be at most {MAX_PFN_CHARS} characters"
            )


@dataclass(frozen=True)
class JobSpec:
    """What a submitter asks to run; the body of a submission."""

    QUEUE: ClassVar[str] = "pandamq.service.submit"
    command: str
    id: str = ""
    site: str | None = None
    name: str | None = None
    task_id: str | None = None
    cores: int = 1
    memory_mb: int = 2000
    walltime_s: int = 86400
    priority: int = 0
    max_attempts: int = 3
    environment: dict[str, str] = field(default_factory=dict)
    final_exit_codes: list[int] = field(default_factory=list)
    input_files: list[str] = field(default_factory=list)
    output_files: list[str] = field(default_factory=list)
    output_destination: str | None = None
    release: str | None = None
    activity: str = "production"
    sites: list[str] = field(default_factory=list)

    def check(self) -> None:
        """Rules beyond types."""
        if not self.command.strip():
            raise SpecError("job spec: field 'command' must not be empty")
        _check_name("id", self.id, allow_empty=True)
        _check_name("site", self.site)
        _check_name("task_id", self.task_id)
        _check_name("output_destination", self.output_destination)
        _check_positive("cores", self.cores)
        _check_positive("memory_mb", self.memory_mb)
        _check_positive("walltime_s", self.walltime_s)
        _check_positive("max_attempts", self.max_attempts)
        _check_range("priority", self.priority, -MAX_COUNT, MAX_COUNT, "job spec")
        for did in self.input_files:
            split_did(did)
        for name in self.output_files:
            if not FILE_NAME_PATTERN.match(name):
                raise SpecError(
                    f"job spec: output file {name!r} must be 1-255 letters, digits, '_', '.' or '-'"
                )
        _check_name("activity", self.activity)
        for n, site in enumerate(self.sites):
            _check_name(f"sites[{n}]", site)


@dataclass(frozen=True)
class JobDispatch:
    """An activated job waiting in its site queue for a pilot."""

    QUEUE: ClassVar[str] = "pandamq.jobs.<site>.<resource_type>"
    job_id: str
    attempt: int
    site: str
    resource_type: str
    priority: int = 0


@dataclass(frozen=True)
class ClaimRequest:
    """A pilot asks to run the job it was delivered."""

    QUEUE: ClassVar[str] = "pandamq.service.claims"
    job_id: str
    attempt: int
    pilot_id: str
    site: str
    reply_to: str
    node: str = ""
    cores: int = 1
    memory_mb: int = 2000
    walltime_s: int = 0

    def check(self) -> None:
        """Rules beyond types: an attempt and a slot of sensible sizes."""
        label = "ClaimRequest message"
        _check_range("attempt", self.attempt, 1, MAX_COUNT, label)
        for name, low in (("cores", 1), ("memory_mb", 1), ("walltime_s", 0)):
            _check_range(name, getattr(self, name), low, MAX_COUNT, label)


@dataclass(frozen=True)
class ClaimReply:
    """The broker's answer to a claim: granted with the job, or refused with a reason."""

    QUEUE: ClassVar[str] = "amq.gen-<tag>"
    job_id: str
    attempt: int
    granted: bool
    reason: str = ""
    job: JobSpec | None = None
    input_files: list[FileInfo] = field(default_factory=list)
    #: The scope the attempt's outputs and log are registered in (its owner's).
    output_scope: str = ""


@dataclass(frozen=True)
class JobEvent:
    """A pilot reports progress of a job attempt it claimed."""

    QUEUE: ClassVar[str] = "pandamq.service.events"
    event_id: str
    job_id: str
    attempt: int
    pilot_id: str
    kind: EventKind
    time: float
    exit_code: int | None = None
    error_code: int | None = None
    diagnostic: str = ""
    files: list[FileInfo] = field(default_factory=list)
    #: What the payload used, on ``finished`` and ``failed`` (None: not measured).
    peak_rss_mb: int | None = None
    cpu_time_s: float | None = None
    wall_time_s: float | None = None
    #: Free texts longer than ``MAX_TEXT_CHARS`` are trimmed to their end on receipt.
    TRIMMED: ClassVar[tuple[str, ...]] = ("diagnostic",)

    def check(self) -> None:
        """Rules beyond types: an attempt from 1, no negative measure, no time from the future."""
        label = "JobEvent message"
        _check_range("attempt", self.attempt, 1, MAX_COUNT, label)
        ahead = self.time - time.time()
        if self.time < 0 or ahead > MAX_CLOCK_AHEAD_S:
            raise SpecError(
                f"{label}: field 'time' must be a time (seconds since 1970) at most "
                f"{MAX_CLOCK_AHEAD_S:g} s ahead of this clock, got {self.time:.0f} "
                f"({ahead:.0f} s ahead)"
            )
        for name in ("peak_rss_mb", "cpu_time_s", "wall_time_s"):
            value = getattr(self, name)
            if value is not None:
                _check_range(name, value, 0, MAX_COUNT, label)


@dataclass(frozen=True)
class JobCommand:
    """A person asks the broker to kill or retry jobs (by id, or every job of a task)."""

    QUEUE: ClassVar[str] = "pandamq.service.commands"
    command: Literal["kill", "retry"]
    job_ids: list[str] = field(default_factory=list)
    task_id: str | None = None
    reason: str = ""
    TRIMMED: ClassVar[tuple[str, ...]] = ("reason",)


@dataclass(frozen=True)
class TaskSpec:
    """A task: one command run over an input dataset, split into jobs at submission.

    In ``command``, ``{inputs}`` becomes the job's input file names and
    ``{outputs}`` its output file names, each separated by spaces. The jobs'
    outputs are registered into ``output_dataset``, their log tarballs into
    ``log_dataset``; both are made with the task and must not exist before.
    """

    QUEUE: ClassVar[str] = "pandamq.service.tasks"
    command: str
    input_dataset: str
    output_dataset: str
    id: str = ""
    name: str | None = None
    files_per_job: int = 1
    cores: int = 1
    memory_mb: int = 2000
    walltime_s: int = 86400
    release: str | None = None
    priority: int = 0
    max_attempts: int = 3
    activity: str = "production"
    sites: list[str] = field(default_factory=list)
    #: Scout jobs run first, to tune the others; None: the service's ``scout_jobs``; 0: none.
    scouts: int | None = None
    #: A site every job's outputs are shipped to (``JobSpec.output_destination``).
    output_destination: str | None = None

    def check(self) -> None:
        """Rules beyond types."""
        if not self.command.strip():
            raise SpecError("task spec: field 'command' must not be empty")
        if self.scouts is not None and self.scouts < 0:
            raise SpecError(f"task spec: field 'scouts' must be 0 or more, got {self.scouts}")
        if self.id and not TASK_ID_PATTERN.match(self.id):
            raise SpecError(
                f"task spec: field 'id' must be 1-56 letters, digits, '_', '.' or '-', "
                f"got {self.id!r}"
            )
        for name in ("input_dataset", "output_dataset"):
            if not FILE_NAME_PATTERN.match(getattr(self, name)):
                raise SpecError(
                    f"task spec: field {name!r} must be 1-255 letters, digits, '_', '.' or '-'"
                )
        if not FILE_NAME_PATTERN.match(self.log_dataset):
            raise SpecError(
                f"task spec: field 'output_dataset' must be at most "
                f"{255 - len(LOG_DATASET_SUFFIX)} characters, to name its log dataset"
            )
        _check_name("activity", self.activity, label="task spec")
        _check_name("output_destination", self.output_destination, label="task spec")
        for n, site in enumerate(self.sites):
            _check_name(f"sites[{n}]", site, label="task spec")
        for name in ("files_per_job", "cores", "memory_mb", "walltime_s", "max_attempts"):
            _check_positive(name, getattr(self, name), label="task spec")
        _check_range("priority", self.priority, -MAX_COUNT, MAX_COUNT, "task spec")

    @property
    def log_dataset(self) -> str:
        """The dataset of the jobs' log tarballs: ``<output_dataset>.log`` (PanDA's habit)."""
        return self.output_dataset + LOG_DATASET_SUFFIX


@dataclass(frozen=True)
class PilotCommand:
    """The broker tells a pilot to stop the payload of a job attempt it runs."""

    QUEUE: ClassVar[str] = "amq.gen-<tag>"
    command: Literal["kill"]
    job_id: str
    attempt: int
    reason: str = ""


MESSAGES: tuple[type[Any], ...] = (
    JobSpec,
    JobDispatch,
    ClaimRequest,
    ClaimReply,
    JobEvent,
    JobCommand,
    PilotCommand,
    TaskSpec,
)

M = TypeVar("M", bound="DataclassInstance")


def encode(message: Any) -> bytes:
    """The JSON body of a message."""
    return json.dumps(message, default=fields_of, separators=(",", ":")).encode()


def fields_of(message: Any) -> dict[str, Any]:
    """A message's fields by name, sharing its values, for JSON to write at once
    (``dataclasses.asdict`` copies every value first: seconds on a 100,000-job task)."""
    return {f.name: getattr(message, f.name) for f in dataclasses.fields(message)}


def decode_body(cls: type[M], body: bytes | str) -> M:
    """Parse and validate a message body; ``SpecError`` names what is wrong."""
    try:
        data = json.loads(body, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SpecError(f"{_label(cls)}: not valid JSON ({exc})") from exc
    except RecursionError as exc:
        # No message nests more than a few levels; json gives up near Python's stack limit.
        raise SpecError(f"{_label(cls)}: JSON nested too deeply") from exc
    return decode(cls, data)


def _no_constant(name: str) -> float:
    """NaN and Infinity are not JSON, though Python's json reads them."""
    raise ValueError(f"{name} is not a JSON number")


def trim(message: M) -> tuple[M, list[str]]:
    """``message`` with its free texts (``TRIMMED``) cut to their last ``MAX_TEXT_CHARS``
    characters, and the names of the fields that were cut."""
    cut = [
        name
        for name in getattr(message, "TRIMMED", ())
        if len(getattr(message, name)) > MAX_TEXT_CHARS
    ]
    if not cut:
        return message, []
    changes = {name: getattr(message, name)[-MAX_TEXT_CHARS:] for name in cut}
    return dataclasses.replace(message, **changes), cut


def decode(cls: type[M], data: Any) -> M:
    """Build a message from already-parsed JSON, strictly."""
    label = _label(cls)
    if not isinstance(data, dict):
        raise SpecError(f"{label}: expected a JSON object, got {_json_type(data)}")
    hints, known = _shape(cls)
    _refuse_unknown(label, data, known)
    values = {}
    for name, f in known.items():
        if name in data:
            values[name] = _convert(label, name, hints[name], data[name])
        elif _required(f):
            raise SpecError(f"{label}: missing required field {name!r}")
    message = cls(**values)
    check = getattr(message, "check", None)
    if check is not None:
        check()
    return message


def decode_table(cls: type[M], data: Any) -> list[M]:
    """Records of ``cls``, a dataclass of scalar fields, from a table (``JobTable``: the
    field names once, then one array of values per record), as strictly as ``decode``
    builds one, column by column: a page of 1,000 jobs field by field took 50 ms."""
    label = _label(cls)
    if not isinstance(data, dict) or set(data) != {"fields", "rows"}:
        raise SpecError(f"{label} table: expected an object of 'fields' and 'rows'")
    names, rows = data["fields"], data["rows"]
    hints = _table_header(cls, label, names)
    if not isinstance(rows, list):
        raise SpecError(f"{label} table: 'rows' must be an array")
    for n, row in enumerate(rows):
        if type(row) is not list or len(row) != len(names):
            raise SpecError(f"{label} table: row {n} must be an array of {len(names)} values")
    for name, column in zip(names, zip(*rows, strict=True), strict=False):
        _check_column(label, name, hints[name], column)
    fields = list(_shape(cls)[1])
    if len(names) == len(fields) > 1:  # every field named: positional, in the class's order
        in_order = operator.itemgetter(*(names.index(f) for f in fields))
        records = [cls(*in_order(row)) for row in rows]
    else:
        records = [cls(**dict(zip(names, row, strict=True))) for row in rows]
    if getattr(cls, "check", None) is not None:
        for record in records:
            record.check()  # type: ignore[attr-defined]
    return records


def _table_header(cls: type[M], label: str, names: Any) -> dict[str, Any]:
    """``cls``'s field types, once ``names`` is known to be a table header of its fields."""
    hints, known = _shape(cls)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise SpecError(f"{label} table: 'fields' must be an array of strings")
    _refuse_unknown(label, names, known)
    if len(set(names)) != len(names):
        raise SpecError(f"{label} table: a field is named twice in {names!r}")
    for name, f in known.items():
        if _required(f) and name not in names:
            raise SpecError(f"{label}: missing required field {name!r}")
    return hints


def _refuse_unknown(label: str, names: Iterable[str], known: Mapping[str, Any]) -> None:
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise SpecError(f"{label}: unknown field(s) {', '.join(map(repr, unknown))}")


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _check_column(label: str, name: str, hint: Any, column: Sequence[Any]) -> None:
    """Every value of ``column`` fits ``hint``; else ``SpecError`` for the first that does not."""
    allowed = _cell_types(hint)
    if allowed is not None:
        found = set(map(type, column))
        if found <= allowed and (int not in found or _in_range(column)):
            return
    for n, value in enumerate(column):
        _convert(label, f"rows[{n}].{name}", hint, value)


def _in_range(column: Sequence[Any]) -> bool:
    """No integer of ``column``, a column of integers and nulls, is beyond ``MAX_INTEGER``."""
    numbers = [v for v in column if v is not None]
    return not numbers or (max(numbers) <= MAX_INTEGER and min(numbers) >= -MAX_INTEGER)


@functools.cache
def _cell_types(hint: Any) -> frozenset[type] | None:
    """The exact JSON types a scalar (or optional scalar) field takes; None for others."""
    if get_origin(hint) in (types.UnionType, typing.Union):
        inner = [a for a in get_args(hint) if a is not type(None)]
        if len(inner) == 1 and type(None) in get_args(hint):
            types_of = _cell_types(inner[0])
            return None if types_of is None else types_of | {type(None)}
        return None
    return frozenset({hint}) if hint in (str, int, bool) else None


@functools.cache
def _shape(cls: type[Any]) -> tuple[dict[str, Any], dict[str, dataclasses.Field[Any]]]:
    """A message class's field types and fields, worked out once (it is costly per message)."""
    return typing.get_type_hints(cls), {f.name: f for f in dataclasses.fields(cls)}


def _convert(label: str, name: str, hint: Any, value: Any) -> Any:
    if hint is Any:
        return value
    converter = _CONVERTERS.get(get_origin(hint))
    if converter is not None:
        return converter(label, name, hint, value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return decode(hint, value)
    return _convert_scalar(label, name, hint, value)


def _convert_optional(label: str, name: str, hint: Any, value: Any) -> Any:
    if value is None and type(None) in get_args(hint):
        return None
    (inner,) = (a for a in get_args(hint) if a is not type(None))
    return _convert(label, name, inner, value)


def _convert_literal(label: str, name: str, hint: Any, value: Any) -> Any:
    if value not in get_args(hint):
        choices = ", ".join(map(str, get_args(hint)))
        raise SpecError(f"{label}: field {name!r} must be one of {choices}, got {value!r}")
    return value


def _convert_list(label: str, name: str, hint: Any, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise SpecError(f"{label}: field {name!r} must be an array, got {_json_type(value)}")
    (item,) = get_args(hint)
    return [_convert(label, f"{name}[{n}]", item, v) for n, v in enumerate(value)]


def _convert_dict(label: str, name: str, hint: Any, value: Any) -> dict[str, Any]:
    """An object whose values all have the hint's value type (strings, integers)."""
    _, item = get_args(hint)
    if not isinstance(value, dict):
        raise SpecError(f"{label}: field {name!r} must be an object, got {_json_type(value)}")
    return {str(k): _convert(label, f"{name}.{k}", item, v) for k, v in value.items()}


_CONVERTERS: dict[Any, Callable[[str, str, Any, Any], Any]] = {
    types.UnionType: _convert_optional,
    typing.Union: _convert_optional,
    Literal: _convert_literal,
    list: _convert_list,
    dict: _convert_dict,
}


def _convert_scalar(label: str, name: str, hint: type[Any], value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INTEGER:
        raise SpecError(f"{label}: field {name!r} is out of range: {value}")
    ok = isinstance(value, hint) and not (hint is not bool and isinstance(value, bool))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        ok, value = True, float(value)
    if not ok:
        raise SpecError(
            f"{label}: field {name!r} must be {_type_word(hint)}, got {_json_type(value)}"
        )
    if hint is float and not math.isfinite(value):
        raise SpecError(f"{label}: field {name!r} must be a finite number, got {value}")
    return value


def _check_name(
    name: str, value: str | None, allow_empty: bool = False, label: str = "job spec"
) -> None:
    if value is None or (allow_empty and value == ""):
        return
    if not NAME_PATTERN.match(value):
        raise SpecError(
            f"{label}: field {name!r} must be 1-64 letters, digits, '_', '.' or '-', got {value!r}"
        )


def split_did(did: str) -> tuple[str, str]:
    """``scope:name`` as (scope, name); ``SpecError`` unless both parts are valid."""
    scope, sep, name = did.partition(":")
    if not sep or not NAME_PATTERN.match(scope) or not FILE_NAME_PATTERN.match(name):
        raise SpecError(
            f"file {did!r} must be scope:name (letters, digits, '_', '.' or '-'; "
            "scope at most 64, name at most 255 characters)"
        )
    return scope, name


def _check_positive(name: str, value: int, label: str = "job spec") -> None:
    _check_range(name, value, 1, MAX_COUNT, label)


def _check_range(name: str, value: float, low: float, high: float, label: str) -> None:
    if value < low:
        raise SpecError(f"{label}: field {name!r} must be at least {low}, got {value}")
    if value > high:
        raise SpecError(f"{label}: field {name!r} must be at most {high}, got {value}")


def _label(cls: type[Any]) -> str:
    return {JobSpec: "job spec", TaskSpec: "task spec"}.get(cls, f"{cls.__name__} message")


_TYPE_WORDS = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _type_word(hint: type[Any]) -> str:
    return _TYPE_WORDS.get(hint, hint.__name__)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    words = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    words |= {list: "an array", dict: "an object"}
    return words.get(type(value), type(value).__name__)
