"""``pandamq top``: one frame of the dashboard (``--once``), and the live one in a terminal."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from datetime import timedelta
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import Engine

from broker.store.engine import transaction
from cli.main import pandamq
from cli.top import QUIT_HINT
from tests.broker.monitor.seed import failed_job, new_site
from tests.broker.service.jobs import TO_RUNNING, TO_THROTTLED, a_site, a_user, put
from tests.cli.processes import PANDAMQ


def test_top_draws_sites_by_state_with_error_rate_and_failures(engine: Engine) -> None:
    # Given a site with two jobs that failed last in a shared database: two hours
    # ahead, after those the DDM bridge's timeout test fails an hour ahead
    ahead = -timedelta(hours=2)
    with transaction(engine) as conn:
        site = new_site(conn)
        job_id, _ = (failed_job(conn, site, 1305, "disk full", 1, ago=ahead) for _ in "ab")
    env = {"PANDAMQ_DATABASE_URL": engine.url.render_as_string(False), "PANDAMQ_CONFIG": None}
    # When one frame is drawn
    result = CliRunner(env=env).invoke(pandamq, ["top", "--once"])
    # Then the site's row counts the failures, a 100 % error rate, and lists one
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if f" {site} " in line)
    assert "2" in row.split() and "100.0%" in row
    assert "disk full" in result.stdout and job_id[:12] in result.stdout


def test_top_shows_each_users_queued_and_running_jobs_and_priority(engine: Engine) -> None:
    # Given a user with 2 running jobs and 30 throttled ones, the highest at priority 7
    # (30: among the 20 users of the most queued jobs in a database other tests share)
    user, site = a_user(), a_site(engine)
    put(engine, user, site, TO_RUNNING, [0, 0])
    put(engine, user, site, TO_THROTTLED, [5] * 29 + [7])
    env = {"PANDAMQ_DATABASE_URL": engine.url.render_as_string(False), "PANDAMQ_CONFIG": None}
    # When one frame is drawn
    result = CliRunner(env=env).invoke(pandamq, ["top", "--once"])
    # Then the user's row: 30 queued, 30 waiting, 0 activated, 2 running, next at priority 7
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if f" {user} " in line)
    assert [c for c in row.split() if c != "│"] == [user, "30", "30", "0", "2", "7"], row


def test_live_top_says_how_to_quit_and_q_quits(tmp_path: Path) -> None:
    # Given a database with the schema, and `pandamq top` live in a terminal
    env = {**os.environ, "PANDAMQ_DATABASE_URL": f"sqlite:///{tmp_path / 'top.sqlite'}"}
    env.pop("PANDAMQ_CONFIG", None)
    subprocess.run([PANDAMQ, "db", "upgrade"], env=env, check=True, capture_output=True)
    controller, terminal = pty.openpty()
    top = subprocess.Popen(
        [PANDAMQ, "top"], env=env, stdin=terminal, stdout=terminal, stderr=terminal
    )
    os.close(terminal)
    try:
        # When its first frame is up and `q` is typed
        screen = _read_until(controller, QUIT_HINT.encode())
        os.write(controller, b"q")
        # Then the frame said how to quit, and top ends at once with exit 0
        assert QUIT_HINT.encode() in screen
        assert top.wait(timeout=10) == 0
    finally:
        top.kill()
        top.wait()
        os.close(controller)


def _read_until(fd: int, wanted: bytes, timeout_s: float = 30.0) -> bytes:
    """What the terminal showed until ``wanted`` (fails the test after ``timeout_s``)."""
    seen = b""
    deadline = time.monotonic() + timeout_s
    while wanted not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"not seen {wanted!r} in {seen!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            seen += os.read(fd, 4096)
    return seen
