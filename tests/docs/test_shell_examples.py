"""Every shell example of README.md and docs/ runs as it is written, on this machine's
RabbitMQ and PostgreSQL.

Each document runs in a session of its own (a fresh directory, vhost and database,
``.venv/bin`` on the PATH and no ``PANDAMQ_*`` variable but those its commands set);
a document marked ``<!-- run after: README.md -->`` goes on in the README's session,
after the README's background commands have stopped. The only changes to the commands
are the names in ``substitutions``: this run's vhost, database and free ports for the
ones the documents use, so that runs never meet. A block that cannot run here says why
(``<!-- not run: REASON -->``); every other block is run, which the test checks.
"""

from __future__ import annotations

import os
import shlex
import socket
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from broker.settings import Settings
from cli.main import pandamq
from tests.budget import Budget
from tests.docs.markdown import ROOT, Block, documents, name_of, run_after, shell_blocks
from tests.docs.shell_session import ShellSession
from tests.services import RABBITMQ_HOST, delete_vhost, drop_database

#: The whole of one session's run (about 45 s on a quiet machine): every wait of it
#: is what is left of this.
SESSION_TIMEOUT_S = 300


@dataclass(frozen=True)
class Names:
    """This run's vhost and database, not yet created: the examples create them."""

    vhost: str
    database: str

    @classmethod
    def fresh(cls) -> Names:
        tag = uuid.uuid4().hex[:10]
        return cls(f"pandamq-docs-{tag}", f"pandamq_docs_{tag}")


def substitutions(names: Names) -> dict[str, str]:
    """What the documents write, and what this run uses instead (ports fresh for each
    document, so that one document's services never hold another's port)."""
    return {
        "amqp://guest:guest@127.0.0.1:5672//": f"amqp://guest:guest@{RABBITMQ_HOST}/{names.vhost}",
        "postgresql+psycopg://postgres@127.0.0.1:5432/pandamq": (
            f"postgresql+psycopg://postgres@127.0.0.1:5432/{names.database}"
        ),
        "-U postgres pandamq": f"-U postgres {names.database}",
        "add_vhost pandamq": f"add_vhost {names.vhost}",
        "-p pandamq guest": f"-p {names.vhost} guest",
        "--port 8080": f"--port {_free_port()}",
        "9108": str(_free_port()),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def sessions() -> dict[str, list[Path]]:
    """Documents with examples to run, by the session they run in (named by its first)."""
    grouped: dict[str, list[Path]] = {}
    for path in documents():
        if any(b.not_run is None for b in shell_blocks(path)):
            grouped.setdefault(run_after(path) or name_of(path), []).append(path)
    return grouped


def runnable(paths: list[Path]) -> list[Block]:
    return [b for p in paths for b in shell_blocks(p) if b.not_run is None]


def test_every_document_names_a_session_that_exists_and_every_substitution_is_used() -> None:
    # Given the documents and their shell blocks
    blocks = [b for p in documents() for b in shell_blocks(p)]
    commands = [c.text for b in blocks if b.not_run is None for c in b.commands()]
    # Then a document run after another names one that starts a session
    names = {name_of(p) for p in documents()}
    for path in documents():
        assert run_after(path) in {None, *names}, f"{name_of(path)}: no such document"
    # And every substitution still meets what some example writes
    unused = [k for k in substitutions(Names.fresh()) if not any(k in c for c in commands)]
    assert not unused, f"no example writes {unused}: drop them from substitutions()"
    # And there is something to run
    assert "README.md" in sessions()


def test_alices_permissions_in_operations_are_those_provision_gives() -> None:
    # Given the rabbitmqctl commands operations.md shows for user.alice and a pilot (not run: users
    # belong to the whole RabbitMQ node)
    blocks = shell_blocks(ROOT / "docs" / "operations.md")
    (block,) = [b for b in blocks if "set_topic_permissions -p pandamq user.alice" in b.text]
    shown = [shlex.split(c.text.replace("\\\n", " "), comments=True) for c in block.commands()]
    # When provision prints its commands for alice and the pilot
    args = ["rabbitmq", "provision", "--vhost", "pandamq", "--user", "alice", "--site", "SITE_A"]
    args += ["--pilot", "SITE_A:wn1"]
    result = CliRunner(env={"PANDAMQ_CONFIG": None}).invoke(pandamq, args)
    assert result.exit_code == 0, result.output
    printed = [shlex.split(line) for line in result.stdout.splitlines() if "rabbitmqctl" in line]
    # Then each command the page shows is one provision runs
    assert shown and all(command in printed for command in shown), (shown, printed)


def test_the_readme_settings_example_shows_the_defaults(tmp_path: Path) -> None:
    # Given the README's TOML example
    text = (ROOT / "README.md").read_text()
    toml = text.split("```toml\n", 1)[1].split("```", 1)[0]
    shown = [line.split("=", 1)[0].strip() for line in toml.splitlines() if "=" in line]
    keys = [k for k in shown if not k.startswith("#")]
    # When it is loaded
    path = tmp_path / "pandamq.toml"
    path.write_text(toml)
    loaded = Settings.load(str(path), environ={})
    # Then every value it sets is the default, except where the database is
    defaults = Settings()
    differ = [k for k in keys if getattr(loaded, k) != getattr(defaults, k)]
    assert differ == ["database_url"]


@dataclass
class DocsRun:
    """A person's terminal, and the names this run uses."""

    shell: ShellSession
    names: Names


@pytest.fixture
def docs_run(budget: Budget, tmp_path: Path) -> Iterator[DocsRun]:
    """A terminal in a new directory; the vhost and database are dropped after."""
    names = Names.fresh()
    directory, logs = tmp_path / "run", tmp_path / "logs"
    directory.mkdir()
    logs.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PANDAMQ_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    shell = ShellSession(directory, logs, env, budget)
    try:
        yield DocsRun(shell, names)
    finally:
        shell.close()
        delete_vhost(names.vhost)
        drop_database(names.database)


@pytest.mark.services
@pytest.mark.timeout(SESSION_TIMEOUT_S)
@pytest.mark.parametrize("first", sessions())
def test_the_shell_examples_run_as_written(first: str, docs_run: DocsRun) -> None:
    # Given the documents of one session, each with names and ports of this run
    paths = sessions()[first]
    session = docs_run.shell
    ran: list[Block] = []
    for path in paths:
        session.substitutions = substitutions(docs_run.names)
        # When each of its blocks runs, command by command, in order
        for block in runnable([path]):
            for command in block.commands():
                session.run(command)
            ran.append(block)
        # Then every command exited 0, and its background commands ran to the end
        session.finish()
    # And no block that says nothing was left out
    assert ran == runnable(paths)
