"""The read-only web monitor: a WSGI app on the standard library's server.

Every page is also JSON under ``/api``: ``/jobs/ID`` and ``/api/jobs/ID``.
One short read-only transaction per request; nothing is cached.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from sqlalchemy import Connection, Engine

from broker.brokerage.exclusion import ExclusionPolicy
from broker.errors import BadInput, NotFound, PandaMQError
from broker.monitor import datasets, render, sites, views
from broker.monitor.pages import error_page, page
from broker.monitor.window import DEFAULT_WINDOW, since
from broker.store.clock import now
from broker.store.engine import transaction

log = logging.getLogger(__name__)

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
Query = dict[str, str]

#: Seconds between reloads of the sites page in a browser.
DASHBOARD_REFRESH_S = 30


@dataclass(frozen=True)
class Route:
    """A page: its path pattern, title, data and HTML."""

    pattern: re.Pattern[str]
    title: str
    data: Callable[[Connection, re.Match[str], Query], dict[str, Any]]
    html: Callable[[dict[str, Any]], str]
    refresh_s: int | None = None


def _window(query: Query) -> tuple[Any, str]:
    window = query.get("since", DEFAULT_WINDOW)
    return since(window, now()), window


def _dashboard(conn: Connection, _m: re.Match[str], q: Query) -> dict[str, Any]:
    start, window = _window(q)
    return views.dashboard(conn, start, window)


def _errors(conn: Connection, _m: re.Match[str], q: Query) -> dict[str, Any]:
    start, window = _window(q)
    return views.errors_page(conn, start, window, q.get("site"))


def _jobs(conn: Connection, _m: re.Match[str], q: Query) -> dict[str, Any]:
    return views.jobs_page(conn, q.get("state", "running"), q.get("site"), q.get("task"))


def _datasets(conn: Connection, _m: re.Match[str], q: Query) -> dict[str, Any]:
    return datasets.dataset_list(conn, q.get("kind"), q.get("state"), q.get("task"))


ROUTES = [
    Route(re.compile(r"^/$"), "Sites", _dashboard, render.dashboard, DASHBOARD_REFRESH_S),
    Route(re.compile(r"^/errors$"), "Errors", _errors, render.errors),
    Route(re.compile(r"^/jobs$"), "Jobs", _jobs, render.jobs),
    Route(
        re.compile(r"^/jobs/(?P<id>[^/]+)$"),
        "Job",
        lambda c, m, _q: views.job_page(c, m["id"]),
        render.job,
    ),
    Route(
        re.compile(r"^/tasks/(?P<id>[^/]+)$"),
        "Task",
        lambda c, m, _q: views.task_page(c, m["id"]),
        render.task,
    ),
    Route(re.compile(r"^/datasets$"), "Datasets", _datasets, render.datasets),
    Route(
        re.compile(r"^/datasets/(?P<id>.+)$"),
        "Dataset",
        lambda c, m, _q: datasets.dataset_page(c, m["id"]),
        render.dataset,
    ),
]


def _site_routes(policy: ExclusionPolicy) -> list[Route]:
    """The site page, which judges the task exclusions with the broker's ``policy``."""
    return [
        Route(
            re.compile(r"^/sites/(?P<name>[^/]+)$"),
            "Site",
            lambda c, m, _q: sites.site_page(c, m["name"], policy, now()),
            render.site,
        )
    ]


class MonitorApp:
    """The WSGI application."""

    def __init__(self, engine: Engine, policy: ExclusionPolicy | None = None) -> None:
        self._engine = engine
        self._routes = [*ROUTES, *_site_routes(policy or ExclusionPolicy())]

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Answer one request with a page or its JSON."""
        path = environ.get("PATH_INFO", "/") or "/"
        as_json = path == "/api" or path.startswith("/api/")
        if as_json:
            path = path[len("/api") :] or "/"
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        status, body, ctype = self._answer(path, query, as_json)
        start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
        return [body]

    def _answer(self, path: str, query: Query, as_json: bool) -> tuple[str, bytes, str]:
        for route in self._routes:
            match = route.pattern.match(path)
            if match is not None:
                return self._page(route, match, query, as_json, path)
        return _failure("404 Not Found", f"no page {path}", as_json)

    def _page(
        self, route: Route, match: re.Match[str], query: Query, as_json: bool, path: str
    ) -> tuple[str, bytes, str]:
        try:
            with transaction(self._engine) as conn:
                data = route.data(conn, match, query)
        except NotFound as exc:
            return _failure("404 Not Found", str(exc), as_json)
        except BadInput as exc:
            return _failure("400 Bad Request", str(exc), as_json)
        except PandaMQError as exc:
            log.warning("monitor: %s", exc)
            return _failure("503 Service Unavailable", str(exc), as_json)
        if as_json:
            return "200 OK", _json(data), "application/json"
        title = _title(route, match)
        html = page(title, route.html(data), "/api" + path, route.refresh_s)
        return "200 OK", html.encode(), "text/html; charset=utf-8"


def _title(route: Route, match: re.Match[str]) -> str:
    ident = match.groupdict().get("id")
    return f"{route.title} {ident}" if ident else route.title


def _json(data: Any) -> bytes:
    return json.dumps(data, indent=2, default=str).encode()


def _failure(status: str, message: str, as_json: bool) -> tuple[str, bytes, str]:
    if as_json:
        return status, _json({"error": message}), "application/json"
    return status, error_page(status, message).encode(), "text/html; charset=utf-8"


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """One thread per request, so a slow page never holds up the next."""

    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("monitor: " + format, *args)


def monitor_server(
    engine: Engine, host: str, port: int, policy: ExclusionPolicy | None = None
) -> WSGIServer:
    """A server of the monitor on ``host:port`` (port 0: any free port); not started."""
    app = MonitorApp(engine, policy)
    try:
        return make_server(host, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
    except OSError as exc:
        raise BadInput(f"cannot serve the monitor on {host}:{port}: {exc.strerror}") from exc
