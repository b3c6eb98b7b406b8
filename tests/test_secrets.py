"""Secrets: a broker URL's password never shows in log lines, error lines, process arguments
(``ps``), the web monitor, the metrics or a payload's environment; files holding it or a
private key are their owner's alone."""

from __future__ import annotations

import logging
import stat
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner

from broker.errors import ConfigError
from broker.factory.submitter import SlotShape
from broker.factory.submitters.slurm import SlurmSubmitter
from broker.observability import logs
from broker.security.secrets import redact
from broker.settings import Settings
from cli.main import pandamq
from tests.budget import TEARDOWN_S
from tests.cli.processes import READY, Pandamq
from tests.nodes import RABBITMQ_START_S, free_port
from tests.tls import TlsRabbitMQNode

PASSWORD = f"pw-{uuid.uuid4().hex}"
URL = f"amqp://svc:{PASSWORD}@127.0.0.1:1/v"


def test_redact_hides_url_passwords_and_private_keys() -> None:
    # Given text holding URLs with passwords (one of a cluster) and a private key
    key = "-----BEGIN PRIVATE KEY-----\nMIGHAgEA\n-----END PRIVATE KEY-----"
    text = f"to {URL};amqps://u:p%40ss@h:5671/v and postgresql://pg:secret@db/x {key} done"
    # When it is redacted, Then no password or key is left, and the rest is
    assert redact(text) == (
        "to amqp://svc:**@127.0.0.1:1/v;amqps://u:**@h:5671/v and postgresql://pg:**@db/x "
        "(a private key, not shown) done"
    )
    assert redact("amqp://guest@h/v and http://h:8080/x") == "amqp://guest@h/v and http://h:8080/x"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_log_lines_and_tracebacks_are_redacted(
    log_format: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given pandamq's logging set up, When a line and a traceback carry a URL with its password
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    logs.setup("INFO", log_format)
    try:
        raise ConnectionError(f"could not reach {URL}")
    except ConnectionError:
        logging.getLogger("pandamq.test").exception("connecting to %s failed", URL)
    finally:
        root.handlers[:], root.level = handlers, level
    # Then stderr has the line and the traceback without the password
    err = capsys.readouterr().err
    assert "connecting to amqp://svc:**@127.0.0.1:1/v failed" in err
    assert "could not reach amqp://svc:**@" in err and PASSWORD not in err


def test_a_password_on_the_command_line_is_warned_about_and_never_printed() -> None:
    # When a command is given a broker URL with a password on its command line
    result = CliRunner(env={"PANDAMQ_CONFIG": None}).invoke(
        pandamq, ["jobs", "--broker-url", URL, "--json"]
    )
    # Then it warns that ps shows it, and its error line does not print it
    assert result.stderr.startswith(
        "pandamq: warning: the password in --broker-url can be read by every user of this "
        "machine (ps); set PANDAMQ_BROKER_URL or put it in the --config file\n"
    )
    assert result.exit_code == 1 and "amqp://svc:**@127.0.0.1:1/v" in result.stderr
    assert PASSWORD not in result.output


def test_a_slurm_script_exporting_the_broker_url_is_its_owners_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a factory whose pilots log in with a password
    settings = Settings(broker_url=URL, work_dir=str(tmp_path))
    # When it writes a pilot's batch script (where no sbatch is on the PATH, even on a
    # host with Slurm, so the submission fails after the script is written)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="sbatch not found"):
        SlurmSubmitter(settings).submit(SlotShape("SITE_A", "SCORE", 1, 2000, 3600), ["p1"])
    # Then the script, which exports the URL, is readable by its owner only
    script = tmp_path / "pilots" / "slurm" / "p1.sh"
    assert PASSWORD in script.read_text()
    assert stat.S_IMODE(script.stat().st_mode) == 0o600


@pytest.fixture
def secret_url(tls_rabbitmq_node: TlsRabbitMQNode) -> Iterator[str]:
    """A vhost of the private node and a user of its own that logs in with a password."""
    node, user = tls_rabbitmq_node, f"svc-{uuid.uuid4().hex[:8]}"
    vhost = node.add_vhost().rsplit("/", 1)[1]
    node.ctl("add_user", user, PASSWORD)
    node.ctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
    yield f"amqp://{user}:{PASSWORD}@127.0.0.1:{node.port}/{vhost}"
    node.ctl("delete_user", user)
    node.ctl("delete_vhost", vhost)


def descendants(pid: int) -> list[int]:
    """Every live process started by ``pid``, and by those, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def command_line(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return str(response.read().decode())


@pytest.mark.services
@pytest.mark.timeout(RABBITMQ_START_S + 150 + TEARDOWN_S)
def test_a_running_deployment_never_shows_the_broker_password(
    secret_url: str, services: tuple[str, str], tmp_path: Path
) -> None:
    # Given `pandamq serve all` with the monitor, metrics and a pilot factory, whose broker
    # URL (in its environment) carries a password, logging everything
    p = Pandamq(secret_url, services[1], tmp_path)
    site = p.new_site()
    monitor, metrics = free_port(), free_port()
    p.env |= {
        "PANDAMQ_LOG_LEVEL": "DEBUG",
        "PANDAMQ_FACTORY_SITES": site,
        "PANDAMQ_FACTORY_INTERVAL_S": "0.5",
        "PANDAMQ_FACTORY_PILOT_IDLE_S": "120",
    }
    try:
        args = ["--monitor", "--port", str(monitor), "--metrics-port", str(metrics)]
        serve = p.start("serve", "all", *args)
        serve.wait_logged(READY)
        # When a job that prints its environment runs on a pilot the factory started
        (job_id,) = p.submit([{"command": "env", "site": site}])
        p.wait_states([job_id], ["finished"], timeout_s=90)
        started = descendants(serve.popen.pid)
        lines = {pid: command_line(pid) for pid in started}
        job_log = p.run("job", job_id, "--log").stdout
        pages = [get(monitor, path) for path in ("/", "/jobs", f"/jobs/{job_id}", "/errors")]
        pages += [get(monitor, f"/sites/{site}"), get(monitor, f"/api/jobs/{job_id}")]
        pages.append(get(metrics, "/metrics"))
    finally:
        p.close()
    # Then no process it started (the query process, the pilot) has it in its arguments
    assert any("pilot_agent" in line for line in lines.values()), lines
    assert all(PASSWORD not in line for line in lines.values()), lines
    assert PASSWORD not in command_line(serve.popen.pid)
    # And its log names the broker without the password, nor do the pilots' logs have it
    user = urlsplit(secret_url).username
    assert f"{READY}amqp://{user}:**@127.0.0.1:" in serve.log()
    assert PASSWORD not in serve.log() + serve.output()
    pilot_logs = list((tmp_path / "work" / "pilots").glob("*.log"))
    assert pilot_logs and all(PASSWORD not in f.read_text() for f in pilot_logs)
    # And the payload got none of the pilot's settings, only its job id
    assert f"PANDAMQ_JOB_ID={job_id}" in job_log and "PANDAMQ_BROKER_URL" not in job_log
    # And no page of the monitor, nor the metrics, show it
    assert "pandamq_job_transitions_total" in pages[-1]
    assert all(PASSWORD not in page for page in pages)
