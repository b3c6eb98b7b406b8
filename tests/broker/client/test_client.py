"""The submitter's client against a real broker service, on both backends: every
call goes over AMQP, answered from the service's database."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select

from broker.api import JobEnding, TaskEnding
from broker.client import Client
from broker.errors import BadInput, NotAllowed, NotFound
from broker.protocol import JobSpec, TaskSpec
from broker.store.engine import transaction
from broker.store.schema import tasks
from tests.ddm_bridge.files import put_file
from tests.harness import System


def _spec(site: str, command: str = "true", **fields: object) -> JobSpec:
    return JobSpec(command=command, id=uuid.uuid4().hex, site=site, **fields)  # type: ignore[arg-type]


def test_submit_watch_and_read_a_job(system: System, client: Client) -> None:
    # Given a site with a pilot
    site = system.new_site()
    system.start_pilot(site)
    # When two jobs are submitted, one failing, and watched to their end
    good, bad = _spec(site, "echo hello"), _spec(site, "exit 3", max_attempts=1)
    receipts = client.submit([good, bad])
    endings = list(client.watch([good.id, bad.id], timeout_s=60))
    # Then both were accepted, and each ending came once with its final state
    assert [r.accepted for r in receipts] == [True, True]
    states = {e.job_id: e.state for e in endings if isinstance(e, JobEnding)}
    assert states == {good.id: "finished", bad.id: "failed"}
    # And the job reads back with its spec, history and owner
    record = client.job(good.id)
    assert record.spec.command == "echo hello"
    assert record.job.owner == client.user
    assert [t.to_state for t in record.transitions][-1] == "finished"
    # And its log holds the payload's output
    log = client.job_log(good.id)
    assert "hello" in "".join(log.files.values())
    # And a watch begun after the end is told at once, from the catch-up query
    again = list(client.watch([bad.id], timeout_s=10))
    assert [(e.job_id, e.state) for e in again if isinstance(e, JobEnding)] == [(bad.id, "failed")]


def test_refusals_name_what_is_wrong(client: Client, system: System) -> None:
    # Given a running service and no such site, job or task
    # When a job names an unknown site
    (receipt,) = client.submit([_spec("NO_SUCH_SITE")])
    # Then it is refused with the reason
    assert not receipt.accepted and "not in the site catalogue" in receipt.reason
    # And so is a job, or a task, whose outputs are to be shipped to an unknown site
    site = system.new_site()
    (receipt,) = client.submit([_spec(site, output_destination="NO_SUCH_SITE")])
    assert not receipt.accepted
    assert "output_destination 'NO_SUCH_SITE' is not in the site catalogue" in receipt.reason
    task = TaskSpec(
        command="true",
        input_dataset=f"in.{uuid.uuid4().hex[:8]}",
        output_dataset=f"out.{uuid.uuid4().hex[:8]}",
        id=f"t{uuid.uuid4().hex[:8]}",
        output_destination="NO_SUCH_SITE",
    )
    put_file(system.settings, system.engine, task.input_dataset, site, b"x")
    with pytest.raises(BadInput, match=r"site\(s\) NO_SUCH_SITE not in the site catalogue"):
        client.submit_task(task)
    # And unknown jobs and tasks are NotFound
    with pytest.raises(NotFound, match="no job 'nope'"):
        client.job("nope")
    with pytest.raises(NotFound, match="no task"):
        client.task("nope")
    with pytest.raises(NotFound, match="no job 'nope'"):
        client.kill(["nope"])
    # And another user's job list is not the asker's to read
    with pytest.raises(NotAllowed, match="production role"):
        client.jobs(owner="user.somebody-else")
    with pytest.raises(NotAllowed, match=r"listing the tasks of user\.somebody-else refused"):
        client.tasks(owner="user.somebody-else")
    # And a filter longer than any name is refused
    with pytest.raises(BadInput, match="at most 256"):
        client.jobs(site="x" * 300)


def test_pages_and_cursors(client: Client, system: System) -> None:
    # Given five jobs of one user at a site without pilots
    site = system.new_site()
    ids = [r.id for r in client.submit([_spec(site) for _ in range(5)])]
    # When they are listed two at a time
    first = client.jobs(site=site, limit=2)
    second = client.jobs(site=site, limit=2, cursor=first.cursor)
    third = client.jobs(site=site, limit=2, cursor=second.cursor)
    # Then the pages hold each job once, and the last has no cursor
    seen = [j.id for page in (first, second, third) for j in page.jobs]
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    assert first.cursor and second.cursor and not third.cursor
    # And a cursor used with other filters is refused
    with pytest.raises(BadInput, match="other filters"):
        client.jobs(site=site, state="failed", cursor=first.cursor)
    with pytest.raises(BadInput, match="not a cursor"):
        client.jobs(site=site, cursor="garbage!")


def test_kill_and_retry_answer_what_they_changed(client: Client, system: System) -> None:
    # Given a job queued at a site without pilots
    site = system.new_site()
    (receipt,) = client.submit([_spec(site)])
    # When it is killed, and the ending watched
    outcome = client.kill([receipt.id], reason="test")
    endings = list(client.watch([receipt.id], timeout_s=30))
    # Then the kill says it changed the job, which ended cancelled
    assert outcome.changed == [receipt.id]
    assert [e.state for e in endings if isinstance(e, JobEnding)] == ["cancelled"]
    # And a retry of a job that did not fail changes nothing and says why
    again = client.retry([receipt.id])
    assert again.changed == [] and "only failed jobs" in again.unchanged[receipt.id]


def test_watch_a_task_to_its_end(client: Client, system: System) -> None:
    # Given a task of three files at a site with a pilot
    task = _task_at_a_site(system, 3, "cat {inputs} > {outputs}")
    # When it is submitted and watched
    assert client.submit_task(task).accepted
    endings = list(client.watch(task_id=task.id, timeout_s=90))
    # Then the last thing told is the task's ending, done, and its status is stored
    assert isinstance(endings[-1], TaskEnding) and endings[-1].status == "done"
    assert client.task(task.id)["status"] == "done"
    # And the tasks table itself says so, for every reader of it
    assert _stored_status(system, task.id) == ("done", True)
    assert task.id in [t["id"] for t in client.tasks()]


def _task_at_a_site(system: System, files: int, command: str, **fields: Any) -> TaskSpec:
    """A task over ``files`` new files at a new site with a DDM bridge and a pilot."""
    site = system.new_site()
    system.start_bridge()
    system.start_pilot(site)
    dataset = f"in.{uuid.uuid4().hex[:8]}"
    for n in range(files):
        put_file(system.settings, system.engine, dataset, site, f"file {n}\n".encode())
    return TaskSpec(
        command=command,
        input_dataset=dataset,
        output_dataset=f"out.{uuid.uuid4().hex[:8]}",
        id=f"t{uuid.uuid4().hex[:8]}",
        sites=[site],
        **fields,
    )


def _stored_status(system: System, task_id: str) -> tuple[str, bool]:
    """The task's status and whether it has an end time, as the table holds them."""
    with transaction(system.engine) as conn:
        row = conn.execute(select(tasks.c.status, tasks.c.ended_at).where(tasks.c.id == task_id))
        status, ended_at = row.one()
    return status, ended_at is not None


def test_a_task_retried_by_hand_is_running_again_then_ends_again(
    client: Client, system: System
) -> None:
    # Given a task of two files whose jobs all fail at a site with a pilot
    task = _task_at_a_site(system, 2, "exit 3", max_attempts=1)
    client.submit_task(task)
    (ending,) = [
        e for e in client.watch(task_id=task.id, timeout_s=90) if isinstance(e, TaskEnding)
    ]
    assert ending.status == "failed" and _stored_status(system, task.id) == ("failed", True)
    # When its jobs are retried by hand
    outcome = client.retry(task_id=task.id)
    # Then the stored status is running again at once, and failed again at the end
    assert len(outcome.changed) == 2
    assert _stored_status(system, task.id) == ("running", False)
    (again,) = [e for e in client.watch(task_id=task.id, timeout_s=90) if isinstance(e, TaskEnding)]
    assert again.status == "failed" and _stored_status(system, task.id) == ("failed", True)
