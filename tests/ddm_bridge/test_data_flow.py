"""Input data moves to the job's site before it is activated; outputs are
registered while it is holding. Real files, on both backends."""

from __future__ import annotations

import uuid
from pathlib import Path

from broker.error_codes import DDMError, ErrorFamily, PilotError
from broker.monitor.datasets import job_file_list
from broker.protocol import JobSpec, TaskSpec
from broker.scopes import owner_scope
from broker.security import identity
from broker.service.tasks import job_id
from broker.store import datasets, subscriptions
from broker.store.clock import now
from broker.store.datasets import FileRecord
from broker.store.engine import transaction
from cli.benchmark.submissions import publish_task
from ddm_bridge.backends.local import LocalDDM
from ddm_bridge.se import Checksum, checksum, copy_verified, se_path, staging_dir
from tests.ddm_bridge.files import dataset_states, put_file, sites_with, subscriptions_to
from tests.harness import System, wait_for


def test_a_job_waits_for_its_input_then_runs_and_registers_its_output(system: System) -> None:
    # Given an input file only at site A, and a job at site B that reads it
    site_a, site_b = system.new_site(), system.new_site()
    input_dataset = f"in.{uuid.uuid4().hex}"
    record = put_file(system.settings, system.engine, input_dataset, site_a, b"x" * 5000)
    system.start_broker()
    system.start_bridge()
    system.start_pilot(site_b)
    spec = JobSpec(
        command=f"wc -c < {record.name} > count.txt",
        site=site_b,
        input_files=[record.did],
        output_files=["count.txt"],
        max_attempts=1,
    )
    # When it is submitted
    (job_id,) = system.submit(spec)
    # Then it finishes, having waited in assigned until the file was copied to B
    assert system.wait_final([job_id]) == {job_id: "finished"}
    job = system.job(job_id)
    states = [t["to_state"] for t in job["transitions"]]
    assert states[:3] == ["defined", "assigned", "activated"]
    assert "panda.dis." in job["transitions"][2]["reason"]
    copy = se_path(system.settings.ddm_root, site_b, record.scope, record.name)
    assert checksum(copy) == Checksum(record.size, record.adler32)
    assert sites_with(system.engine, record) == {site_a, site_b}
    (subscription,) = subscriptions_to(system.engine, site_b)
    assert (subscription["state"], subscription["files_done"]) == ("done", 1)
    with transaction(system.engine) as conn:
        assert subscriptions.moving(conn, input_dataset) == [subscription]
    # And the output is in the job's output dataset with its size and checksum
    with transaction(system.engine) as conn:
        (output,) = datasets.dataset_files(conn, f"{job_id}.output")
        (log,) = datasets.dataset_files(conn, f"{job_id}.log")
    stored = se_path(system.settings.ddm_root, site_b, output.scope, output.name)
    assert stored.read_text().strip() == "5000"
    assert checksum(stored) == Checksum(output.size, output.adler32)
    assert log.name == f"{job_id}.1.log.tgz"
    # And both are closed once the job is final
    wait_for(
        lambda: dataset_states(system.engine, f"{job_id}.output", f"{job_id}.log") == {"closed"}
    )
    # And the job lists each of its files with its dataset
    with transaction(system.engine) as conn:
        listed = {(f["role"], f["name"]): f["dataset"] for f in job_file_list(conn, job_id)}
    assert listed == {
        ("input", record.name): input_dataset,
        ("output", "count.txt"): f"{job_id}.output",
        ("log", log.name): f"{job_id}.log",
    }


def test_jobs_sharing_inputs_wait_on_one_dispatch_dataset_and_are_activated_together(
    system: System,
) -> None:
    # Given 200 jobs at site B, all needing the same two files that only site A has
    site_a, site_b = system.new_site(), system.new_site()
    name = f"in.{uuid.uuid4().hex}"
    files = [put_file(system.settings, system.engine, name, site_a, b"%d" % i) for i in range(2)]
    system.start_broker()
    specs = [
        JobSpec(command="true", site=site_b, input_files=[f.did for f in files]) for _ in range(200)
    ]
    ids = system.submit(*specs)
    wait_for(lambda: list(system.states(ids).values()) == ["assigned"] * 200)
    # When the bridge starts
    system.start_bridge()
    # Then one subscription brings the files, and its completion activates all 200 jobs
    # as far as the site's cap allows (20 with no job running), the rest throttled
    wait_for(
        lambda: sorted(system.states(ids).values()) == ["activated"] * 20 + ["throttled"] * 180,
        timeout_s=60,
    )
    (subscription,) = subscriptions_to(system.engine, site_b)
    assert (subscription["state"], subscription["files_total"]) == ("done", 2)
    activated = [i for i, state in system.states(ids).items() if state == "activated"]
    reasons = {system.job(i)["transitions"][-1]["reason"] for i in activated}
    assert reasons == {f"all input files are at the site ({subscription['dataset']} complete)"}


def test_a_corrupted_copy_is_detected_and_made_again(system: System) -> None:
    # Given a transfer tool whose first copy arrives corrupted
    site_a, site_b = system.new_site(), system.new_site()
    record = put_file(system.settings, system.engine, f"in.{uuid.uuid4().hex}", site_a, b"good")
    copies: list[Path] = []

    def flaky_copy(source: Path, destination: Path, expected: Checksum) -> None:
        copies.append(source)
        if len(copies) == 1:
            bad = source.with_name(source.name + ".corrupt")
            bad.write_bytes(b"evil")
            source = bad
        copy_verified(source, destination, expected)

    system.start_broker()
    system.start_bridge(LocalDDM(system.settings, system.engine, copy=flaky_copy))
    # When a job at B needs the file
    (job_id,) = system.submit(JobSpec(command="true", site=site_b, input_files=[record.did]))
    # Then the corrupt copy is caught, the second copy lands, and the job is activated
    wait_for(lambda: system.states([job_id]).get(job_id) == "activated")
    assert len(copies) == 2
    (subscription,) = subscriptions_to(system.engine, site_b)
    assert (subscription["state"], subscription["attempts"]) == ("done", 1)
    copy = se_path(system.settings.ddm_root, site_b, record.scope, record.name)
    assert copy.read_bytes() == b"good"


def test_a_source_that_stays_bad_fails_the_subscription_and_its_jobs(system: System) -> None:
    # Given a registered file whose only replica was damaged afterwards
    site_a, site_b = system.new_site(), system.new_site()
    record = put_file(system.settings, system.engine, f"in.{uuid.uuid4().hex}", site_a, b"data")
    se_path(system.settings.ddm_root, site_a, record.scope, record.name).write_bytes(b"dat!")
    system.start_broker()
    system.start_bridge()
    # When a job at B needs it
    spec = JobSpec(command="true", site=site_b, input_files=[record.did], max_attempts=1)
    (job_id,) = system.submit(spec)
    # Then the subscription fails after its retries, and the job fails with a DDM code
    assert system.wait_final([job_id]) == {job_id: "failed"}
    job = system.job(job_id)
    assert (job["error_family"], job["error_code"]) == (
        ErrorFamily.DDM.value,
        DDMError.SUBSCRIPTION_FAILED,
    )
    assert "adler32" in job["diagnostic"]
    (subscription,) = subscriptions_to(system.engine, site_b)
    assert subscription["state"] == "failed"
    assert subscription["attempts"] == system.settings.transfer_retries
    assert not se_path(system.settings.ddm_root, site_b, record.scope, record.name).exists()


def test_a_missing_output_fails_the_job_with_a_stage_out_code(system: System) -> None:
    # Given a job that declares an output its payload does not write
    site = system.new_site()
    system.start_broker()
    system.start_bridge()
    system.start_pilot(site)
    spec = JobSpec(command="echo hi", site=site, output_files=["never.txt"], max_attempts=1)
    # When it runs
    (job_id,) = system.submit(spec)
    # Then it fails with the stage-out code, and its log is still registered
    assert system.wait_final([job_id]) == {job_id: "failed"}
    job = system.job(job_id)
    assert (job["error_family"], job["error_code"]) == (
        ErrorFamily.PILOT.value,
        PilotError.STAGE_OUT_FAILED,
    )
    assert "never.txt" in job["diagnostic"]
    with transaction(system.engine) as conn:
        assert [f.name for f in datasets.dataset_files(conn, f"{job_id}.log")] == [
            f"{job_id}.1.log.tgz"
        ]


def test_outputs_shipped_to_a_destination_keep_the_job_transferring_until_they_land(
    system: System,
) -> None:
    # Given a job at site A whose outputs must go to site B
    site_a, site_b = system.new_site(), system.new_site()
    system.start_broker()
    system.start_bridge()
    system.start_pilot(site_a)
    spec = JobSpec(
        command="echo result > r.txt",
        site=site_a,
        output_files=["r.txt"],
        output_destination=site_b,
        max_attempts=1,
    )
    # When it runs
    (job_id,) = system.submit(spec)
    # Then it passes through transferring and finishes once the output is at B
    assert system.wait_final([job_id]) == {job_id: "finished"}
    job = system.job(job_id)
    assert [t["to_state"] for t in job["transitions"]][-3:] == [
        "holding",
        "transferring",
        "finished",
    ]
    assert "panda.sub." in job["transitions"][-1]["reason"]
    with transaction(system.engine) as conn:
        (output,) = datasets.dataset_files(conn, f"{job_id}.output")
    assert sites_with(system.engine, output) == {site_a, site_b}
    landed = se_path(system.settings.ddm_root, site_b, output.scope, output.name)
    assert checksum(landed) == Checksum(output.size, output.adler32)
    (subscription,) = subscriptions_to(system.engine, site_b)
    assert subscription["state"] == "done"


def test_a_tasks_outputs_go_to_the_tasks_destination(system: System) -> None:
    # Given a task of two files at site A whose outputs must go to site B
    site_a, site_b = system.new_site(), system.new_site()
    dataset = f"in.{uuid.uuid4().hex[:8]}"
    for n in range(2):
        put_file(system.settings, system.engine, dataset, site_a, f"file {n}\n".encode())
    system.start_broker()
    system.start_bridge()
    system.start_pilot(site_a)
    task = TaskSpec(
        command="cat {inputs} > {outputs}",
        input_dataset=dataset,
        output_dataset=f"out.{uuid.uuid4().hex[:8]}",
        id=f"t{uuid.uuid4().hex[:8]}",
        sites=[site_a],
        output_destination=site_b,
        scouts=0,
    )
    # When it runs
    publish_task(system.settings, task)
    job_ids = [job_id(task.id, n) for n in (1, 2)]
    wait_for(lambda: len(system.states(job_ids)) == 2, what="the task's jobs")
    # Then each job passes through transferring and finishes once its output is at B
    assert system.wait_final(job_ids) == dict.fromkeys(job_ids, "finished")
    landed = set()
    for job in job_ids:
        states = [t["to_state"] for t in system.job(job)["transitions"]]
        assert states[-3:] == ["holding", "transferring", "finished"]
        name = f"{task.output_dataset}._{job[-6:]}"
        (output,) = [f for f in _outputs(system, task.output_dataset) if f.name == name]
        assert sites_with(system.engine, output) == {site_a, site_b}
        copy = se_path(system.settings.ddm_root, site_b, output.scope, output.name)
        assert checksum(copy) == Checksum(output.size, output.adler32)
        landed.add(copy.read_text())
    # And between them the two outputs at B hold both inputs
    assert landed == {"file 0\n", "file 1\n"}


def _outputs(system: System, dataset: str) -> list[FileRecord]:
    with transaction(system.engine) as conn:
        return list(datasets.dataset_files(conn, dataset))


def my_scope(system: System) -> str:
    """The scope of the test's own jobs of no task: its submitter's."""
    return owner_scope(identity.of(system.settings))


def register_at(system: System, site: str, scope: str, name: str, content: str) -> FileRecord:
    """``scope:name`` on ``site``'s SE with ``content``, registered there."""
    path = se_path(system.settings.ddm_root, site, scope, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    found = checksum(path)
    record = datasets.FileRecord(scope, name, str(uuid.uuid4()), found.size, found.adler32)
    with transaction(system.engine) as conn:
        datasets.register(conn, f"reg.{uuid.uuid4().hex}", [(record, str(path))], site, now())
    return record


def test_an_output_name_taken_in_its_scope_fails_once_and_is_never_retried(
    system: System,
) -> None:
    # Given a job that stored and registered <name> in its owner's scope at a site
    site = system.new_site()
    system.start_broker()
    system.start_pilot(site)
    name = f"same-{uuid.uuid4().hex[:8]}.txt"
    first, second = (
        JobSpec(command=f"echo {n} > {name}", site=site, output_files=[name]) for n in (1, 2)
    )
    (first_id,) = system.submit(first)
    assert system.wait_final([first_id]) == {first_id: "finished"}
    # When another job of the same owner writes other content under the same name
    (second_id,) = system.submit(second)
    # Then its first attempt fails with the DDM code for a taken name, naming the file,
    # and is not retried (a retry would write the same name)
    assert system.wait_final([second_id]) == {second_id: "failed"}
    job = system.job(second_id)
    assert (job["attempt"], job["error_family"], job["error_code"]) == (
        1,
        ErrorFamily.DDM.value,
        DDMError.OUTPUT_NAME_TAKEN,
    )
    scope = my_scope(system)
    assert f"{scope}:{name}" in job["diagnostic"]
    assert "give the output another name" in job["diagnostic"]
    # And the first file is intact on the SE, and the second left nothing staged
    assert se_path(system.settings.ddm_root, site, scope, name).read_text() == "1\n"
    assert not staging_dir(system.settings.ddm_root, site, second_id, 1).exists()


def test_jobs_of_different_owners_write_the_same_output_name(system: System) -> None:
    # Given <name> registered at a site in the scope of another owner, and in the old
    # shared scope `user`, each with other content
    site = system.new_site()
    name = f"n-{uuid.uuid4().hex[:8]}.txt"
    theirs = [register_at(system, site, s, name, "theirs\n") for s in ("user.other", "user")]
    system.start_broker()
    system.start_pilot(site)
    # When a job of this test's owner writes <name>
    spec = JobSpec(command=f"echo mine > {name}", site=site, output_files=[name])
    (job_id,) = system.submit(spec)
    # Then it finishes, with its output registered in its owner's own scope
    assert system.wait_final([job_id]) == {job_id: "finished"}
    with transaction(system.engine) as conn:
        (output,) = datasets.dataset_files(conn, f"{job_id}.output")
    assert (output.scope, output.name) == (my_scope(system), name)
    root = system.settings.ddm_root
    assert se_path(root, site, output.scope, name).read_text() == "mine\n"
    # And the other owners' files are untouched
    for record in theirs:
        assert se_path(root, site, record.scope, name).read_text() == "theirs\n"


def test_an_output_registered_elsewhere_with_other_content_fails_registration(
    system: System,
) -> None:
    # Given <scope>:<name> registered with a replica at site A, in the owner's scope
    site_a, site_b = system.new_site(), system.new_site()
    name = f"taken-{uuid.uuid4().hex[:8]}.txt"
    record = register_at(system, site_a, my_scope(system), name, "original\n")
    system.start_broker()
    system.start_pilot(site_b)
    # When a job at B writes other content under that name
    spec = JobSpec(command=f"echo new > {name}", site=site_b, output_files=[name], max_attempts=1)
    (job_id,) = system.submit(spec)
    # Then it fails in holding with the DDM code of a taken name, and nothing is registered
    assert system.wait_final([job_id]) == {job_id: "failed"}
    job = system.job(job_id)
    assert (job["error_family"], job["error_code"]) == (
        ErrorFamily.DDM.value,
        DDMError.OUTPUT_NAME_TAKEN,
    )
    assert "adler32" in job["diagnostic"]
    assert [t["to_state"] for t in job["transitions"]][-2:] == ["holding", "failed"]
    with transaction(system.engine) as conn:
        assert datasets.dataset_files(conn, f"{job_id}.output") == []
    assert sites_with(system.engine, record) == {site_a}
