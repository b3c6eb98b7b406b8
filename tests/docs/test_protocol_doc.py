"""The documentation follows the code: docs/protocol.md and docs/architecture.md
are checked against broker.protocol, broker.topology and broker.states."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from broker import api, topology
from broker.error_codes import (
    BrokerageError,
    DDMError,
    DispatcherError,
    ErrorFamily,
    PilotError,
    TaskBufferError,
)
from broker.protocol import MESSAGES, FileInfo
from broker.states import JobState, can_transition

FAMILIES = {
    ErrorFamily.PILOT: PilotError,
    ErrorFamily.DISPATCHER: DispatcherError,
    ErrorFamily.TASKBUFFER: TaskBufferError,
    ErrorFamily.BROKERAGE: BrokerageError,
    ErrorFamily.DDM: DDMError,
}

DOCS = Path(__file__).resolve().parents[2] / "docs"
PROTOCOL = DOCS / "protocol.md"
ARCHITECTURE = DOCS / "architecture.md"

HEADING = re.compile(r"^(#+)\s+(.*?)\s*$")
FIELD_ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|\s*[^|]*\|\s*(yes|no)\s*\|")
TRANSITION_ROW = re.compile(r"^\|\s*`(\w+)`\s*\|\s*`(\w+)`\s*\|")
ENDINGS = {JobState.FAILED, JobState.CANCELLED, JobState.CLOSED}


def _section(text: str, title: str) -> list[str]:
    """The lines under heading ``title``, up to the next heading of the same or higher level."""
    lines = text.splitlines()
    for start, line in enumerate(lines):
        match = HEADING.match(line)
        if match and match.group(2) == title:
            level = len(match.group(1))
            body = []
            for rest in lines[start + 1 :]:
                other = HEADING.match(rest)
                if other and len(other.group(1)) <= level:
                    break
                body.append(rest)
            return body
    pytest.fail(f"{PROTOCOL.name} has no heading {title!r}")


def _field_table(section: list[str]) -> dict[str, str]:
    """Field name → required column of the table whose header starts with ``| field |``."""
    rows: dict[str, str] = {}
    in_table = False
    for line in section:
        if line.startswith("| field |"):
            in_table = True
            continue
        if in_table and not line.startswith("|"):
            break
        match = FIELD_ROW.match(line)
        if in_table and match:
            rows[match.group(1)] = match.group(2)
    return rows


@pytest.mark.parametrize(
    "message",
    [*MESSAGES, FileInfo, *api.MESSAGES, *api.RECORDS, api.JobPage],
    ids=lambda m: m.__name__,
)
def test_every_message_field_is_documented(message: type) -> None:
    # Given the protocol page and a message class
    text = PROTOCOL.read_text()
    # When its section's field table is read
    rows = _field_table(_section(text, message.__name__))
    # Then it lists exactly the dataclass fields, each required iff it has no default
    fields = {f.name: f for f in dataclasses.fields(message)}
    assert set(rows) == set(fields), f"{message.__name__}: table rows differ from the fields"
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        assert rows[name] == ("yes" if required else "no"), f"{message.__name__}.{name}"
        assert f"| `{name}` |" in text


def test_every_exchange_and_queue_is_documented() -> None:
    # Given the protocol page
    text = PROTOCOL.read_text()
    # When the topology constants naming exchanges and queues are listed
    names = {n: v for n, v in vars(topology).items() if n.endswith(("_EXCHANGE", "_QUEUE"))}
    # Then each constant and its value appear
    assert names
    for constant, value in names.items():
        assert f"`{constant}`" in text, constant
        assert f"`{value}`" in text, value


def test_topology_details_are_documented() -> None:
    # Given the protocol page
    text = PROTOCOL.read_text()
    # Then the dead-letter header, the resource types and their threshold appear
    assert f"`{topology.REASON_HEADER}`" in text
    assert f"`HIMEM_MB_PER_CORE`, {topology.HIMEM_MB_PER_CORE} MB" in text
    for resource in topology.RESOURCE_TYPES:
        assert f"| `{resource}` |" in text, resource


def test_every_error_code_is_documented() -> None:
    # Given the protocol page
    text = PROTOCOL.read_text()
    # Then each error code appears as a row with its number and name
    for family, codes in FAMILIES.items():
        for code in codes:
            row = f"| `{family.value}` | {code.value} | `{code.name}` |"
            assert row in text, row


def test_every_job_state_is_in_the_architecture_page() -> None:
    # Given the architecture page
    text = ARCHITECTURE.read_text()
    # Then every state of the state machine appears
    for state in JobState:
        assert f"`{state.value}`" in text, state.value


def test_transition_table_matches_the_state_machine() -> None:
    # Given the architecture page's rows of the form | `from` | `to` |
    rows = {
        (m.group(1), m.group(2))
        for line in ARCHITECTURE.read_text().splitlines()
        if (m := TRANSITION_ROW.match(line))
    }
    # When the legal moves other than the endings (failed, cancelled, closed) are listed
    legal = {
        (a.value, b.value)
        for a in JobState
        for b in JobState
        if b not in ENDINGS and can_transition(a, b)
    }
    # Then the table lists exactly those moves
    assert rows == legal
