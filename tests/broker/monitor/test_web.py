"""The monitor's JSON and its answers to pages that do not exist or bad queries."""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import quote, unquote

from sqlalchemy import Engine, insert, update

from broker.monitor.web import MonitorApp
from broker.store.clock import now
from broker.store.datasets import FileRecord, register
from broker.store.engine import transaction
from broker.store.schema import jobs, tasks
from broker.store.site_status import StatusChange, change_status
from tests.broker.monitor.seed import failed_job, new_site
from tests.broker.service.jobs import TO_RUNNING, TO_THROTTLED, a_site, a_user, put


def get(engine: Engine, path: str) -> tuple[str, str, Any]:
    route, _, query = path.partition("?")
    route = unquote(route)  # as a WSGI server hands PATH_INFO on
    answer: dict[str, Any] = {}

    def start(status: str, headers: list[tuple[str, str]]) -> None:
        answer.update(status=status, type=dict(headers)["Content-Type"])

    body = b"".join(MonitorApp(engine)({"PATH_INFO": route, "QUERY_STRING": query}, start))
    data = json.loads(body) if answer["type"] == "application/json" else body.decode()
    return answer["status"], answer["type"], data


def test_every_page_is_also_json(engine: Engine) -> None:
    with transaction(engine) as conn:
        site = new_site(conn)
        job_id = failed_job(conn, site, 1305, "segfault", exit_code=139)
    status, _, page = get(engine, f"/errors?site={site}")
    assert status == "200 OK" and "segfault" in page and f"/jobs/{job_id}" in page
    _, ctype, data = get(engine, f"/api/errors?site={site}")
    assert ctype == "application/json" and data["errors"][0]["example_jobs"] == [job_id]
    _, _, job = get(engine, f"/api/jobs/{job_id}")
    assert job["errors"][0]["exit_code"] == 139
    _, _, dashboard = get(engine, "/api/")
    row = next(r for r in dashboard["sites"] if r["site"] == site)
    assert row["counts"] == {"failed": 1} and row["error_rate"] == 1.0


def test_the_dashboard_shows_each_users_queued_and_running_jobs(engine: Engine) -> None:
    # Given a user with 1 running job and 25 throttled ones at priority 3
    user, site = a_user(), a_site(engine)
    put(engine, user, site, TO_RUNNING, [0])
    put(engine, user, site, TO_THROTTLED, [3] * 25)
    # When the dashboard is read, Then its users list the user's jobs and next priority
    _, _, dashboard = get(engine, "/api/")
    row = next(u for u in dashboard["users"] if u["user"] == user)
    assert row == {
        "user": user,
        "waiting": 25,
        "activated": 0,
        "running": 1,
        "queued": 25,
        "priority": 3,
    }
    _, _, page = get(engine, "/")
    assert "<h2>Users</h2>" in page and user in page


def test_missing_pages_and_bad_queries_say_so(engine: Engine) -> None:
    assert get(engine, "/api/jobs/nope")[::2] == ("404 Not Found", {"error": "no job 'nope'"})
    assert get(engine, "/tasks/nope")[0] == "404 Not Found"
    assert get(engine, "/nowhere")[0] == "404 Not Found"
    status, _, data = get(engine, "/api/errors?since=soon")
    assert status == "400 Bad Request" and "time window" in data["error"]
    assert get(engine, "/jobs?state=lost")[0] == "400 Bad Request"


def test_datasets_list_and_page_show_files_and_replicas(engine: Engine) -> None:
    # Given an input dataset of two files with replicas at a site
    name = f"data.{uuid.uuid4().hex[:8]}:input"
    files = [
        FileRecord("data", f"f{i}.root", str(uuid.uuid4()), 100 + i, "0000abcd") for i in (1, 2)
    ]
    with transaction(engine) as conn:
        site = new_site(conn)
        register(conn, name, [(f, f"/se/{f.name}") for f in files], site, now())
    # Then the list names it with its file count, and its page its files and replicas
    listed = get(engine, "/api/datasets?kind=input")[2]["datasets"]
    assert [d["files"] for d in listed if d["name"] == name] == [2]
    page = get(engine, f"/datasets/{quote(name, safe='')}")[2]
    assert "data:f1.root" in page and "data:f2.root" in page
    data = get(engine, f"/api/datasets/{quote(name, safe='')}")[2]
    assert data["replicas"] == [{"site": site, "state": "available", "files": 2}]
    assert get(engine, "/api/datasets/nope")[0] == "404 Not Found"


def test_sites_left_out_show_who_why_and_until_when(engine: Engine) -> None:
    # Given a site the automatic rule put in test, whose 3 jobs of one task failed
    task_id = f"task-{uuid.uuid4().hex[:8]}"
    with transaction(engine) as conn:
        site = new_site(conn)
        conn.execute(insert(tasks).values(id=task_id, status="running", created_at=now()))
        ids = [failed_job(conn, site, 1305, "segfault") for _ in range(3)]
        conn.execute(update(jobs).where(jobs.c.id.in_(ids)).values(task_id=task_id))
        change = StatusChange(site, "online", "test", "automatic", "all 3 jobs failed", now())
        assert change_status(conn, change, now())
    # When a person opens the sites page and the site's page
    _, _, dashboard = get(engine, "/api/")
    _, _, html = get(engine, "/")
    _, _, page = get(engine, f"/api/sites/{site}")
    # Then the site is listed as left out, with who, why and until when
    (row,) = [r for r in dashboard["left_out"] if r["name"] == site]
    assert (row["status"], row["status_by"], row["status_reason"]) == (
        "test",
        "automatic",
        "all 3 jobs failed",
    )
    assert row["until"] == "online once a probe job finishes"
    assert f"/sites/{site}" in html and "Sites left out" in html
    # And its page has its history and the task it is left out for, until when
    assert [(h["from_status"], h["to_status"]) for h in page["history"]] == [("online", "test")]
    (task,) = page["tasks_left_out"]
    assert task["task_id"] == task_id and task["reason"].startswith(f"task {task_id}: 3 failed")
    assert " until " in task["reason"]
    assert get(engine, "/sites/NO_SUCH_SITE")[0] == "404 Not Found"
