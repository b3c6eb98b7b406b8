"""The payload subprocess: stopping it, and measuring its memory."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from broker.protocol import JobSpec
from pilot_agent.payload import Payload, own_peak_mb
from tests.harness import wait_for


def test_a_payload_that_ignores_term_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    # Given a payload that traps SIGTERM
    payload = Payload(JobSpec(command="trap '' TERM; echo ready; sleep 60", id="j"), tmp_path)
    wait_for(lambda: "ready" in payload.stdout_path.read_text(), what="the trap to be set")
    # When it is stopped with a short grace period
    started = time.monotonic()
    code = payload.stop(grace_s=0.5)
    # Then SIGKILL ended it once the grace period was over
    assert code == -signal.SIGKILL
    assert time.monotonic() - started >= 0.5


def test_a_payload_that_obeys_term_ends_with_it(tmp_path: Path) -> None:
    payload = Payload(JobSpec(command="exec sleep 60", id="j"), tmp_path)
    assert payload.stop(grace_s=10) == -signal.SIGTERM


def test_memory_counts_every_process_of_the_payload(tmp_path: Path) -> None:
    hog = (
        "python3 -c 'import time; x = bytearray(120 * 2**20); print(1, flush=True); time.sleep(30)'"
    )
    payload = Payload(JobSpec(command=f"{hog} & {hog} & wait", id="j"), tmp_path)
    try:
        wait_for(lambda: payload.rss_mb() >= 240, timeout_s=20, what="both children's memory")
    finally:
        payload.stop(grace_s=1)


def test_the_usage_of_a_payload_that_ended_is_its_peak_memory_cpu_and_wall_time(
    tmp_path: Path,
) -> None:
    # Given a payload that holds 100 MB for a moment, spins the CPU, then exits, and whose
    # memory is sampled while it runs (as the supervisor does)
    command = (
        "python3 -c 'import time; x = bytearray(100 * 2**20); time.sleep(0.5); del x; "
        "t = time.process_time()\nwhile time.process_time() - t < 0.3: pass'"
    )
    payload = Payload(JobSpec(command=command, id="j"), tmp_path)
    wait_for(lambda: payload.rss_mb() >= 100, timeout_s=20, what="the payload's 100 MB")
    # When it has ended
    assert payload.wait(20) == 0
    usage = payload.usage()
    # Then its peak memory, its CPU time and its wall time are reported: the peak is
    # the payload's, not the one the kernel carries over from the process that started
    # it (this test's, several hundred MB in a whole run)
    assert 100 <= usage.peak_rss_mb < 200
    assert usage.cpu_time_s >= 0.3
    assert usage.wall_time_s >= usage.cpu_time_s * 0.9


def test_the_kernels_peak_counts_where_the_payload_grew_beyond_the_pilot(
    tmp_path: Path,
) -> None:
    # Given a payload that holds more memory than this process has ever held, for less
    # time than anyone samples it
    big_mb = own_peak_mb() + 300
    command = f"python3 -c 'x = bytearray({big_mb} * 2**20)'"
    payload = Payload(JobSpec(command=command, id="j"), tmp_path)
    # When it has ended, never sampled
    assert payload.wait(30) == 0
    # Then its peak is the kernel's
    assert big_mb <= payload.usage().peak_rss_mb < big_mb + 100
