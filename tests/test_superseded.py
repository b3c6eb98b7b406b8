"""A superseded attempt: its pilot is told to stop, and what it left blocks no later
attempt (issue 23 item 1), on every backend."""

from __future__ import annotations

import dataclasses

from broker.error_codes import DispatcherError, ErrorFamily
from broker.protocol import JobSpec
from broker.scopes import owner_scope
from ddm_bridge.se import se_path, staging_dir
from tests.harness import System, wait_for

#: The broker fails an attempt after this long without a heartbeat.
LOST_S = 2.0


def silent_pilot_system(system: System) -> None:
    """The broker judges lost heartbeats after LOST_S, often."""
    system.settings = dataclasses.replace(
        system.settings, lost_heartbeat_s=LOST_S, watchdog_interval_s=0.2
    )


def state(system: System, job_id: str) -> tuple[int, str] | None:
    job = system.job(job_id) if system.states([job_id]) else None
    return None if job is None else (job["attempt"], job["state"])


def test_a_superseded_attempts_output_blocks_no_later_attempt(system: System) -> None:
    # Given a job whose first pilot goes silent (it heartbeats far less often than the
    # broker's lost-heartbeat limit, as a pilot frozen with SIGSTOP would) while its
    # payload runs on past the limit, and writes an output of its own content
    silent_pilot_system(system)
    site = system.new_site()
    system.start_broker()
    silent = dataclasses.replace(system.settings, heartbeat_interval_s=600.0)
    system.start_pilot(site, settings=silent)
    spec = JobSpec(
        command=f"sleep {LOST_S * 2}; echo $PWD > out.txt",
        site=site,
        output_files=["out.txt"],
        max_attempts=2,
    )
    (job_id,) = system.submit(spec)
    wait_for(lambda: state(system, job_id) == (1, "running"), what="attempt 1 running")
    # When the watchdog fails attempt 1, a live pilot runs attempt 2, and the silent
    # pilot then ends attempt 1 and stages its output out
    system.start_pilot(site)
    wait_for(lambda: (state(system, job_id) or (0,))[0] == 2, what="attempt 2")
    # Then attempt 2 finishes with its own output registered
    assert system.wait_final([job_id], timeout_s=60) == {job_id: "finished"}
    job = system.job(job_id)
    first, second = job["attempts"]
    assert second["state"] == "finished"
    assert (first["error_family"], first["error_code"]) == (
        ErrorFamily.DISPATCHER,
        DispatcherError.LOST_HEARTBEAT,
    )
    root = system.settings.ddm_root
    written = se_path(root, site, owner_scope(job["owner"]), "out.txt").read_text()
    assert written.strip().endswith(f"{job_id}.2"), written
    # And nothing attempt 1 staged is left on the SE once its pilot has reported
    wait_for(lambda: not staging_dir(root, site, job_id, 1).exists(), what="attempt 1 removed")
    assert not staging_dir(root, site, job_id, 2).exists()


def test_a_pilot_learns_at_its_next_heartbeat_that_its_attempt_is_over(system: System) -> None:
    # Given a pilot that heartbeats less often than the lost-heartbeat limit, running a
    # payload that would run for a minute
    silent_pilot_system(system)
    site = system.new_site()
    system.start_broker()
    slow = dataclasses.replace(system.settings, heartbeat_interval_s=LOST_S * 2)
    system.start_pilot(site, settings=slow, max_jobs=1)
    (job_id,) = system.submit(JobSpec(command="sleep 60", site=site, max_attempts=1))
    # When the watchdog fails its attempt before its next heartbeat
    assert system.wait_final([job_id], timeout_s=30) == {job_id: "failed"}
    # Then that heartbeat is answered with a kill: the pilot stops the payload and leaves
    # (max_jobs 1) long before the payload would have ended
    pilot_thread = system.threads[-1]
    wait_for(lambda: not pilot_thread.is_alive(), timeout_s=LOST_S * 6, what="the pilot to stop")
    job = system.job(job_id)
    assert (job["error_family"], job["error_code"]) == (
        ErrorFamily.DISPATCHER,
        DispatcherError.LOST_HEARTBEAT,
    )
    # And the DDM bridge removes what the attempt staged, at its next pass
    staged = staging_dir(system.settings.ddm_root, site, job_id, 1)
    wait_for(lambda: not staged.exists(), what="the bridge to remove the attempt's files")
