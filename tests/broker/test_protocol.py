"""The wire protocol: strict decoding, one clear line per problem, lossless round trips."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from broker import api
from broker.errors import SpecError
from broker.protocol import (
    ClaimReply,
    ClaimRequest,
    FileInfo,
    JobDispatch,
    JobEvent,
    JobSpec,
    TaskSpec,
    decode,
    decode_body,
    decode_table,
    encode,
    trim,
)


def test_the_smallest_spec_gets_defaults() -> None:
    spec = decode(JobSpec, {"command": "echo hi", "site": "SITE_A"})
    assert (spec.cores, spec.memory_mb, spec.max_attempts, spec.environment) == (1, 2000, 3, {})


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"site": "SITE_A"}, "missing required field 'command'"),
        ({"command": 3}, "field 'command' must be a string, got an integer"),
        ({"command": "x", "cores": "2"}, "field 'cores' must be an integer, got a string"),
        ({"command": "x", "cores": True}, "field 'cores' must be an integer, got a boolean"),
        ({"command": "x", "cores": 0}, "field 'cores' must be at least 1"),
        ({"command": " "}, "field 'command' must not be empty"),
        ({"command": "x", "colour": "red"}, "unknown field(s) 'colour'"),
        ({"command": "x", "site": "a/b"}, "field 'site' must be 1-64 letters"),
        ({"command": "x", "environment": {"A": 1}}, "field 'environment.A' must be a string"),
        (["command"], "expected a JSON object, got an array"),
        ({"command": "x", "input_files": ["nocolon"]}, "file 'nocolon' must be scope:name"),
        ({"command": "x", "input_files": ["a:b/c"]}, "file 'a:b/c' must be scope:name"),
        ({"command": "x", "output_files": ["../x"]}, "output file '../x' must be 1-255"),
        ({"command": "x", "input_files": "s:n"}, "field 'input_files' must be an array"),
    ],
)
def test_bad_specs_are_refused_with_one_line(data: Any, says: str) -> None:
    with pytest.raises(SpecError) as info:
        decode(JobSpec, data)
    assert says in str(info.value)
    assert "\n" not in str(info.value)


def test_a_task_names_its_log_dataset_after_its_output_dataset() -> None:
    task = {"command": "x", "input_dataset": "in"}
    assert decode(TaskSpec, {**task, "output_dataset": "out"}).log_dataset == "out.log"
    decode(TaskSpec, {**task, "output_dataset": "o" * 251})
    with pytest.raises(SpecError, match="'output_dataset' must be at most 251 characters"):
        decode(TaskSpec, {**task, "output_dataset": "o" * 252})


def test_a_body_that_is_not_json_is_refused() -> None:
    with pytest.raises(SpecError, match="not valid JSON"):
        decode_body(JobEvent, b"\xff{")


def test_event_kind_must_be_known() -> None:
    body = {
        "event_id": "e",
        "job_id": "j",
        "attempt": 1,
        "pilot_id": "p",
        "kind": "dancing",
        "time": 1,
    }
    with pytest.raises(SpecError, match="must be one of starting, running"):
        decode(JobEvent, body)


@pytest.mark.parametrize(
    "message",
    [
        JobSpec(command="echo", id="j1", site="S", environment={"A": "b"}),
        JobDispatch("j1", 2, "S", "MCORE", priority=5),
        ClaimRequest("j1", 1, "p1", "S", reply_to="p1", node="n", cores=8, memory_mb=16000),
        ClaimReply("j1", 1, True, job=JobSpec(command="ls", id="j1")),
        ClaimReply("j1", 1, False, reason="job is running"),
        JobEvent(
            "e1", "j1", 1, "p1", "failed", 12.5, exit_code=3, error_code=1305, diagnostic="boom"
        ),
    ],
)
def test_every_message_round_trips(message: Any) -> None:
    assert decode_body(type(message), encode(message)) == message


def test_an_event_with_files_round_trips() -> None:
    event = JobEvent(
        "e1", "j1", 1, "p1", "finished", 1.5, files=[FileInfo("s", "n", "g", 3, "0a0b0c0d", "log")]
    )
    assert decode_body(JobEvent, encode(event)) == event


def test_a_claim_reply_names_the_replica_of_each_input_and_refuses_a_bad_one() -> None:
    info = FileInfo("data", "f", "g", 3, "0a0b0c0d", rse="SITE-B_DATADISK", pfn="/se/data/f")
    reply = ClaimReply("j1", 1, True, input_files=[info])
    assert decode_body(ClaimReply, encode(reply)) == reply
    for bad, says in [({"rse": "no such rse!"}, "field 'rse'"), ({"pfn": "/" * 4097}, "'pfn'")]:
        body = encode(ClaimReply("j1", 1, True, input_files=[dataclasses.replace(info, **bad)]))
        with pytest.raises(SpecError, match=says):
            decode_body(ClaimReply, body)


def test_a_task_asks_for_no_scouts_or_more_but_never_fewer() -> None:
    task = {"command": "true", "input_dataset": "in", "output_dataset": "out"}
    assert decode(TaskSpec, task).scouts is None
    assert decode(TaskSpec, {**task, "scouts": 0}).scouts == 0
    with pytest.raises(SpecError, match="field 'scouts' must be 0 or more, got -1"):
        decode(TaskSpec, {**task, "scouts": -1})


def test_numbers_json_cannot_hold_are_refused() -> None:
    # Given events whose time is infinite, and a spec whose priority is beyond any column
    infinite = b'{"event_id":"e","job_id":"j","attempt":1,"pilot_id":"p","kind":"running",'
    infinite += b'"time":1e999}'
    huge = b'{"command": "true", "priority": 3000000000}'
    # When they are decoded, Then each is refused naming its field
    with pytest.raises(SpecError, match="field 'time' must be a finite number"):
        decode_body(JobEvent, infinite)
    with pytest.raises(SpecError, match="field 'priority' must be at most 2147483647"):
        decode_body(JobSpec, huge)


def test_trim_keeps_the_end_of_a_long_diagnostic() -> None:
    # Given an event with a 20,000-character diagnostic
    event = JobEvent("e", "j", 1, "p", "failed", 0.0, diagnostic="a" * 19_990 + "0123456789")
    # When it is trimmed, Then its last 10,000 characters are kept, and the field named
    trimmed, cut = trim(event)
    assert cut == ["diagnostic"] and len(trimmed.diagnostic) == 10_000
    assert trimmed.diagnostic.endswith("0123456789")
    assert trim(trimmed) == (trimmed, [])


TABLE_FIELDS = ["id", "state", "attempt", "resource_type", "priority", "created_at", "owner"]
TABLE_ROW = ["j-1", "running", 1, "SCORE", 0, "2026-12-03T10:00:00.000000+00:00", "alice"]


def test_a_job_table_is_read_into_summaries_in_the_class_order() -> None:
    fields = [*TABLE_FIELDS, "modified_at"]
    summary = api.JobSummary(
        "j-1", "running", 1, "SCORE", 0, TABLE_ROW[5], TABLE_ROW[5], owner="alice"
    )
    table = {"fields": fields, "rows": [[*TABLE_ROW, TABLE_ROW[5]]]}
    assert decode_table(api.JobSummary, table) == [summary]
    every = [f.name for f in dataclasses.fields(api.JobSummary)]
    row = [getattr(summary, name) for name in reversed(every)]
    assert decode_table(api.JobSummary, {"fields": every[::-1], "rows": [row]}) == [summary]


@pytest.mark.parametrize(
    ("fields", "row", "refusal"),
    [
        (TABLE_FIELDS, TABLE_ROW, "missing required field 'modified_at'"),
        ([*TABLE_FIELDS, "x"], [*TABLE_ROW, 1], "unknown field(s) 'x'"),
        ([*TABLE_FIELDS, "id"], [*TABLE_ROW, "j"], "a field is named twice"),
        ([*TABLE_FIELDS, "modified_at"], TABLE_ROW, "row 0 must be an array of 8 values"),
        (
            [*TABLE_FIELDS, "modified_at"],
            ["j-1", "running", True, *TABLE_ROW[3:], "t"],
            "field 'rows[0].attempt' must be an integer, got a boolean",
        ),
        (
            [*TABLE_FIELDS, "modified_at"],
            ["j-1", "running", 2**70, *TABLE_ROW[3:], "t"],
            "field 'rows[0].attempt' is out of range",
        ),
        (
            [*TABLE_FIELDS, "modified_at"],
            [*TABLE_ROW, None],
            "field 'rows[0].modified_at' must be a string, got null",
        ),
    ],
)
def test_a_job_table_is_read_as_strictly_as_one_object_per_job(
    fields: list[str], row: list[Any], refusal: str
) -> None:
    with pytest.raises(SpecError) as refused:
        decode_table(api.JobSummary, {"fields": fields, "rows": [row]})
    assert refusal in str(refused.value)


def test_a_job_table_that_is_not_one_is_refused() -> None:
    for data in ([], {"rows": []}, {"fields": "id", "rows": []}, {"fields": [1], "rows": []}):
        with pytest.raises(SpecError, match="table"):
            decode_table(api.JobSummary, data)
