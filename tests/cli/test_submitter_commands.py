"""Every reading command of a submitter works with no database at all: ``jobs``,
``tasks``, ``task``, ``datasets``, ``dataset`` and ``watch`` ask the broker service."""

from __future__ import annotations

import json
import uuid

from click.testing import CliRunner, Result

from broker.protocol import JobSpec, TaskSpec
from cli.main import pandamq
from tests.ddm_bridge.files import put_file
from tests.harness import System


def submitter(system: System, *args: str) -> Result:
    env = {
        "PANDAMQ_BROKER_URL": system.settings.broker_url,
        "PANDAMQ_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/x",
        "PANDAMQ_CONFIG": None,
    }
    return CliRunner(env=env).invoke(pandamq, list(args))


def test_reading_commands_need_no_database(system: System) -> None:
    # Given a finished job and a task over a dataset, at a site with a pilot
    site = system.new_site()
    system.start_broker()
    system.start_bridge()
    system.start_pilot(site)
    (job_id,) = system.submit(JobSpec(command="true", site=site))
    dataset = f"in.{uuid.uuid4().hex[:8]}"
    put_file(system.settings, system.engine, dataset, site, b"x\n")
    task = TaskSpec(
        command="cat {inputs} > {outputs}", input_dataset=dataset, output_dataset=f"o.{dataset}"
    )
    spec = system.settings.work_dir + ".task.json"
    with open(spec, "w") as f:
        json.dump({**task.__dict__, "id": f"t{uuid.uuid4().hex[:8]}", "sites": [site]}, f)
    task_id = submitter(system, "submit", spec).stdout.strip()
    # When each reading command runs as a submitter without a database
    watched = submitter(system, "watch", "--job", job_id, "--timeout", "60")
    task_watch = submitter(system, "watch", "--task", task_id, "--timeout", "60")
    listed = json.loads(submitter(system, "jobs", "--site", site, "--json").stdout)
    tasks = json.loads(submitter(system, "tasks", "--json").stdout)
    shown = json.loads(submitter(system, "task", task_id, "--json").stdout)
    datasets = json.loads(submitter(system, "datasets", "--json").stdout)
    one = json.loads(submitter(system, "dataset", dataset, "--json").stdout)
    # Then each answers from the service
    assert watched.exit_code == 0 and f"job {job_id} finished" in watched.stdout
    assert task_watch.exit_code == 0, task_watch.output
    assert f"task {task_id} done" in task_watch.stdout
    assert {j["id"] for j in listed} == {job_id, f"{task_id}-000001"}
    assert task_id in [t["id"] for t in tasks] and shown["status"] == "done"
    assert dataset in [d["name"] for d in datasets]
    assert [f["sites"] for f in one["files"]] == [[site]]
