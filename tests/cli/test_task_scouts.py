"""``pandamq submit`` says when a task is too small to scout; ``pandamq task`` shows it."""

from __future__ import annotations

import json
import uuid

from broker.protocol import TaskSpec
from cli.tasks import tuning_text
from tests.cli.test_submitter_commands import submitter
from tests.ddm_bridge.files import put_file
from tests.harness import System


def test_a_task_too_small_to_scout_is_submitted_with_a_note(system: System) -> None:
    # Given a one-file dataset, and a task over it that asks for 2 scouts
    site = system.new_site()
    system.start_broker()
    dataset = f"in.{uuid.uuid4().hex[:8]}"
    put_file(system.settings, system.engine, dataset, site, b"x\n")
    task = TaskSpec(
        command="cat {inputs} > {outputs}", input_dataset=dataset, output_dataset=f"o.{dataset}"
    )
    spec = system.settings.work_dir + ".task.json"
    task_id = f"t{uuid.uuid4().hex[:8]}"
    with open(spec, "w") as f:
        json.dump({**task.__dict__, "id": task_id, "sites": [site], "scouts": 2}, f)
    # When it is submitted
    submitted = submitter(system, "submit", spec)
    # Then it is accepted, with a note on stderr that it runs without scouts
    assert submitted.exit_code == 0 and submitted.stdout.strip() == task_id
    note = (
        f"pandamq: note: task {task_id} runs without scouts: its 1 job(s) are too few "
        "for 2 scout(s) (scouting needs at least 4 jobs)"
    )
    assert submitted.stderr.strip() == note
    # And `pandamq task` shows no scouts and the same reason
    shown = json.loads(submitter(system, "task", task_id, "--json").stdout)
    assert (shown["scouts"], shown["tuning"], shown["status"]) == (0, None, "running")
    assert shown["reason"].startswith("runs without scouts")
    text = submitter(system, "task", task_id).stdout
    assert "reason  runs without scouts" in text


def test_a_tasks_tuning_is_shown_in_one_line() -> None:
    tuning = {"memory_mb": 3600, "walltime_s": 5400, "jobs": 10, "percentile": 95.0}
    tuning |= {"peak_rss_mb": 3000, "wall_time_s": 3600.0, "cpu_time_s": 3500.5}
    assert tuning_text(tuning) == (
        "3600 MB, 5400 s from 10 finished job(s) at percentile 95 "
        "(peak 3000 MB, wall 3600.0 s, CPU 3500.5 s)"
    )
