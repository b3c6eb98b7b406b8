"""What every command shares: settings from flags, config and environment; the
database; and turning pandamq errors into one line and an exit code."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click
from sqlalchemy import Engine

from broker.client import Client
from broker.errors import BadInput, PandaMQError
from broker.observability import logs
from broker.security.secrets import has_password, redact
from broker.settings import Settings
from broker.store.engine import open_engine
from broker.store.migrate import require_current

F = TypeVar("F", bound=Callable[..., Any])

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class Group(click.Group):
    """A click group whose commands print pandamq's and click's errors as one
    ``pandamq: error:`` line, never a traceback nor click's usage text."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        """Parse the group's own options; a usage error is one line."""
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.ClickException as exc:
            _fail_click(exc)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; map pandamq errors and click's to exit codes."""
        try:
            return super().invoke(ctx)
        except PandaMQError as exc:
            _fail(str(exc), EXIT_BAD_INPUT if isinstance(exc, BadInput) else EXIT_FAILED)
        except click.ClickException as exc:
            _fail_click(exc)


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"pandamq: error: {_one_line(redact(message))}", err=True)
    sys.exit(code)


def _fail_click(exc: click.ClickException) -> NoReturn:
    """Click's usage errors (exit 2) and others, with a pointer to the command's help."""
    message = exc.format_message()
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click.UsageError) and ctx is not None:
        message += f" (see `{ctx.command_path} --help`)"
    _fail(message, exc.exit_code)


def _one_line(text: str) -> str:
    """Driver messages (psycopg's among them) span lines; an error is one line."""
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if param.name in URL_OPTIONS and isinstance(value, str) and has_password(value):
        flag = f"--{str(param.name).replace('_', '-')}"
        click.echo(
            f"pandamq: warning: the password in {flag} can be read by every user of this "
            f"machine (ps); set {URL_OPTIONS[param.name]} or put it in the --config file",
            err=True,
        )
    if value is not None:
        ctx.ensure_object(dict).setdefault("overrides", {})[param.name] = value
    return value


#: The command-line options that take a URL, and the variable to give it in instead.
URL_OPTIONS = {"broker_url": "PANDAMQ_BROKER_URL", "database_url": "PANDAMQ_DATABASE_URL"}


def connection_options(command: F) -> F:
    """``--broker-url`` and ``--database-url`` on a command (they win over env and config)."""
    command = click.option(
        "--database-url",
        expose_value=False,
        callback=_remember,
        help="SQL database, e.g. postgresql+psycopg://user@host/db (PANDAMQ_DATABASE_URL).",
    )(command)
    return click.option(
        "--broker-url",
        expose_value=False,
        callback=_remember,
        help="Message broker, e.g. amqp://guest:guest@127.0.0.1:5672// (PANDAMQ_BROKER_URL).",
    )(command)


def settings(ctx: click.Context, **overrides: Any) -> Settings:
    """The settings for this invocation."""
    obj = ctx.find_root().ensure_object(dict)
    merged = {**obj.get("overrides", {}), **ctx.ensure_object(dict).get("overrides", {})}
    return Settings.load(obj.get("config"), **merged, **overrides)


def database(s: Settings, url: str | None = None) -> Engine:
    """An engine on a database (``database_url``, or ``url``) that has the current schema;
    closed when the command ends."""
    engine = open_engine(url or s.database_url, create=False)
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(engine.dispose)
    require_current(engine)
    return engine


def client(ctx: click.Context) -> Client:
    """A submitter's client for this invocation (AMQP only); closed when the command ends."""
    opened = Client(settings(ctx))
    ctx.call_on_close(opened.close)
    return opened


def setup_logging(level: str, log_format: str = "text") -> None:
    """Log lines on stderr, as text or JSON (``--log-format``)."""
    logs.setup(level, log_format)


def log_format_option(command: F) -> F:
    """The global ``--log-format`` (it wins over env and config)."""
    return click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        expose_value=False,
        callback=_remember,
        help="Log lines of services as text or JSON objects (PANDAMQ_LOG_FORMAT).",
    )(command)
