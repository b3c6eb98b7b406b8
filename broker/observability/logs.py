"""Log lines as text or as JSON, carrying the job, task, site and pilot where known.

Code names them with ``extra``: ``log.info("...", extra=job_context(job_id=...))``;
the JSON format puts them in fields of their own, the text format leaves them
to the message.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from broker.security.secrets import redact

#: The fields a log record may carry about the work it is about.
CONTEXT_FIELDS = ("job_id", "attempt", "task_id", "site", "pilot_id")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def job_context(**fields: Any) -> dict[str, Any]:
    """``extra`` for a log call: the known context fields, the unknown ones left out."""
    unknown = set(fields) - set(CONTEXT_FIELDS)
    if unknown:
        raise ValueError(f"not log context fields: {', '.join(sorted(unknown))}")
    return {k: v for k, v in fields.items() if v is not None}


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context, exception."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class Redacting(logging.Formatter):
    """Another formatter's lines with URL passwords and private keys cut out
    (``broker.security.secrets``): whatever a message or a traceback holds."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self._inner = inner

    def format(self, record: logging.LogRecord) -> str:
        """The inner formatter's line, redacted."""
        return redact(self._inner.format(record))


def setup(level: str, log_format: str = "text") -> None:
    """Log on stderr at ``level``, as text or JSON lines, secrets cut out."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = JSONFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(Redacting(formatter))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Alembic says which dialect it uses each time the schema is checked.
    logging.getLogger("alembic").setLevel(logging.WARNING)
