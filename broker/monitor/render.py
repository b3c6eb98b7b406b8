"""Each monitor view's data as an HTML body."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from broker.monitor.pages import cell, fields, link, pre, table
from broker.store.jobs import PUBLIC_FIELDS

FAILURE_COLUMNS = ["job", "attempt", "site", "family", "code", "exit", "diagnostic", "ended"]
#: A user's row of the dashboard (and of ``pandamq top``).
USER_COLUMNS = ["user", "queued", "waiting", "activated", "running", "priority"]
HISTORY_COLUMNS = ("attempt", "from_state", "to_state", "at", "reason")
ATTEMPT_COLUMNS = (
    "attempt",
    "site",
    "pilot_id",
    "state",
    "started_at",
    "ended_at",
    "error_family",
    "error_code",
    "exit_code",
    "diagnostic",
    "retry_decision",
)
ATTEMPT_HEADERS = ["attempt", "site", "pilot", "state", "started", "ended"]
ATTEMPT_HEADERS += ["family", "code", "exit", "diagnostic", "retry"]


def dashboard(data: dict[str, Any]) -> str:
    """Sites x states, with links to the jobs behind each count, and recent failures."""
    states: list[str] = data["states"]
    headers = ["site", *states, "running/queued", "error rate"]
    rows = [_site_cells(row, states) for row in [*data["sites"], data["totals"]]]
    return (
        f"<p>Active jobs, and jobs that ended in the last {cell(data['window'])}.</p>"
        + table(headers, rows)
        + "<h2>Sites left out</h2>"
        + _left_out(data["left_out"])
        + "<h2>Recent failures</h2>"
        + _failures(data["recent_failures"])
        + "<h2>Users</h2>"
        + _users(data["users"])
    )


def _users(users: list[dict[str, Any]]) -> str:
    """Each user's queued and running jobs, and the priority its next job goes at."""
    if not users:
        return "<p class='muted'>none</p>"
    rows = [[cell(u[c]) for c in USER_COLUMNS] for u in users]
    return table(USER_COLUMNS, rows, text_columns=1)


LEFT_OUT_COLUMNS = ["site", "status", "set by", "since", "why", "until"]
NONE = "<p class='muted'>none</p>"


def _left_out(sites: list[dict[str, Any]]) -> str:
    if not sites:
        return "<p class='muted'>none: every site is online</p>"
    rows = [
        [
            link(f"/sites/{quote(s['name'], safe='')}", s["name"]),
            cell(s["status"]),
            cell(s["status_by"]),
            cell(s["status_at"]),
            cell(s["status_reason"]),
            cell(s["until"]),
        ]
        for s in sites
    ]
    return table(LEFT_OUT_COLUMNS, rows, text_columns=6)


def site(data: dict[str, Any]) -> str:
    """A site: its status (who, why, since, until), the tasks it is left out for, history."""
    name = data["name"]
    tasks = [
        [link(f"/tasks/{quote(t['task_id'], safe='')}", t["task_id"]), cell(t["reason"])]
        for t in data["tasks_left_out"]
    ]
    history = [
        [cell(h[c]) for c in ("at", "from_status", "to_status", "status_by", "reason")]
        for h in data["history"]
    ]
    return (
        fields(data, ["status", "status_by", "status_at", "status_reason", "until", "probe_at"])
        + f"<p>{link('/errors', 'Errors at ' + name, site=name)} · "
        + f"{link('/jobs', 'Running jobs', state='running', site=name)}</p>"
        + "<h2>Tasks left out here</h2>"
        + (
            table(["task", "why, and until when"], tasks, 2)
            if tasks
            else "<p class='muted'>none</p>"
        )
        + "<h2>Status history</h2>"
        + table(["at", "from", "to", "set by", "why"], history, text_columns=5)
    )


def _site_cells(row: dict[str, Any], states: list[str]) -> list[str]:
    site = row["site"]
    name = cell(site) if site == "total" else link("/errors", site, site=site)
    counts = [
        link("/jobs", row["counts"][s], state=s, site=None if site == "total" else site)
        if row["counts"].get(s)
        else ""
        for s in states
    ]
    return [name, *counts, cell(row["running_per_queued"]), _rate(row["error_rate"])]


def _rate(rate: float | None) -> str:
    return "" if rate is None else f"{rate:.1%}"


def _failures(failures: list[dict[str, Any]]) -> str:
    if not failures:
        return "<p class='muted'>none</p>"
    rows = [
        [
            link(f"/jobs/{f['job_id']}", f["job_id"]),
            cell(f["attempt"]),
            cell(f["site"]),
            cell(f["error_family"]),
            cell(f["error_code"]),
            cell(f["exit_code"]),
            cell(f["diagnostic"]),
            cell(f["ended_at"]),
        ]
        for f in failures
    ]
    return table(FAILURE_COLUMNS, rows, text_columns=1)


def job(data: dict[str, Any]) -> str:
    """A job: fields, errors of its attempts, history, attempts, spec."""
    task = data.get("task_id")
    task_link = f"<p>Task: {link(f'/tasks/{task}', task)}</p>" if task else ""
    history = [[cell(t[c]) for c in HISTORY_COLUMNS] for t in data["transitions"]]
    attempts = [[cell(a[c]) for c in ATTEMPT_COLUMNS] for a in data["attempts"]]
    return (
        task_link
        + fields(data, PUBLIC_FIELDS)
        + "<h2>History</h2>"
        + table(["attempt", "from", "to", "at", "reason"], history, text_columns=0)
        + "<h2>Attempts and errors</h2>"
        + table(ATTEMPT_HEADERS, attempts, text_columns=0)
        + "<h2>Files</h2>"
        + _job_files(data.get("files", []))
        + "<h2>Payload log</h2>"
        + _job_log(data.get("log", {}))
        + "<h2>Spec</h2>"
        + pre(data["spec"])
    )


def task(data: dict[str, Any]) -> str:
    """A task: fields, progress, jobs per state."""
    progress = data["progress"]
    counts = [
        [link("/jobs", state, state=state, task=data["id"]), cell(n)]
        for state, n in sorted(data["counts"].items())
    ]
    return (
        fields(data, ["id", "name", "status", "reason", "created_at", "jobs", "finished"])
        + f"<p>Progress: {_rate(progress) or 'no jobs'}</p>"
        + table(["state", "jobs"], counts)
        + "<h2>Scouts and tuning</h2>"
        + _tuning(data.get("scouts"), data.get("tuning"))
    )


#: A task's tuning as the monitor shows it (broker/operations/tuning.py).
TUNING_COLUMNS = ["memory_mb", "walltime_s", "jobs", "percentile"]
TUNING_COLUMNS += ["peak_rss_mb", "wall_time_s", "cpu_time_s", "output_bytes"]


def _tuning(scouts: int | None, tuning: dict[str, Any] | None) -> str:
    ran = f"<p>{cell(scouts)} scout job(s)</p>" if scouts else "<p>no scout jobs</p>"
    if not tuning:
        return ran + "<p class='muted'>not tuned</p>"
    return ran + table(TUNING_COLUMNS, [[cell(tuning.get(c)) for c in TUNING_COLUMNS]], 0)


def errors(data: dict[str, Any]) -> str:
    """The error list: one line per error code and diagnostic."""
    where = f" at {cell(data['site'])}" if data["site"] else ""
    rows = [
        [
            cell(e["count"]),
            cell(e["error_family"]),
            cell(e["error_code"]),
            cell(e["exit_code"]),
            cell(e["description"]),
            cell(e["diagnostic"]),
            " ".join(link(f"/jobs/{j}", j) for j in e["example_jobs"]),
        ]
        for e in data["errors"]
    ]
    headers = ["count", "family", "code", "exit", "description", "diagnostic", "example jobs"]
    body = table(headers, rows, text_columns=0) if rows else "<p class='muted'>none</p>"
    return f"<p>Failed attempts in the last {cell(data['window'])}{where}.</p>" + body


def jobs(data: dict[str, Any]) -> str:
    """A list of jobs."""
    columns = ["id", "state", "site", "task_id", "attempt", "error_code", "modified_at"]
    rows = [
        [link(f"/jobs/{j['id']}", j["id"])] + [cell(j[c]) for c in columns[1:]]
        for j in data["jobs"]
    ]
    return table(columns, rows) if rows else "<p class='muted'>none</p>"


def _dataset_link(name: str | None) -> str:
    return "" if name is None else link(f"/datasets/{quote(name, safe='')}", name)


def _job_files(files: list[dict[str, Any]]) -> str:
    rows = [
        [
            *(cell(f[c]) for c in ("role", "did", "size", "adler32")),
            _dataset_link(f["dataset"]),
            _dataset_link(f["dispatch_dataset"]),
        ]
        for f in files
    ]
    headers = ["role", "file", "size", "adler32", "dataset", "dispatch dataset"]
    return table(headers, rows, text_columns=2) if rows else "<p class='muted'>none</p>"


def _job_log(log: dict[str, Any]) -> str:
    """The tail of each file of the job's stored log, or why there is none."""
    if "error" in log:
        return f"<p class='muted'>{cell(log['error'])}</p>"
    where = f"<p>Attempt {cell(log['attempt'])}, {cell(log['site'])}:{cell(log['path'])}</p>"
    parts = [
        f"<h3>{cell(name)}</h3><pre>{cell(text) or '<span class=muted>empty</span>'}</pre>"
        for name, text in log["files"].items()
    ]
    return where + "".join(parts)


def datasets(data: dict[str, Any]) -> str:
    """The datasets changed last."""
    columns = ["kind", "state", "files", "site", "task_id", "modified_at"]
    rows = [[_dataset_link(d["name"])] + [cell(d[c]) for c in columns] for d in data["datasets"]]
    return table(["name", *columns], rows, text_columns=3) if rows else "<p class='muted'>none</p>"


def dataset(data: dict[str, Any]) -> str:
    """A dataset: fields, replicas per site, subscriptions, files."""
    replicas = [[cell(r["site"]), cell(r["state"]), cell(r["files"])] for r in data["replicas"]]
    subscriptions = [
        [cell(s[c]) for c in ("site", "state", "files_done", "files_total", "attempts", "error")]
        for s in data["subscriptions"]
    ]
    files = [
        [cell(f[c]) for c in ("position", "did", "size", "adler32", "guid")] for f in data["files"]
    ]
    return (
        fields(data, ["name", "kind", "state", "site", "task_id", "created_at", "closed_at"])
        + "<h2>Replicas</h2>"
        + table(["site", "state", "files"], replicas, text_columns=2)
        + "<h2>Subscriptions</h2>"
        + table(["site", "state", "done", "files", "attempts", "error"], subscriptions, 2)
        + "<h2>Files</h2>"
        + table(["#", "file", "size", "adler32", "guid"], files, text_columns=0)
    )
