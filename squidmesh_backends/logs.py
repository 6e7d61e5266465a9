"""Logging with the run attached: every ``squidmesh.*`` record carries run context.

Records from SquidMesh's loggers get the attributes ``run_id``, ``workflow``,
``step``, ``attempt`` and ``job_id`` (``None`` outside a run), taken from the
code path that logs them, so a formatter or a JSON log handler can always use
them. Nothing is printed; configure handlers as usual in the host application,
or use :func:`configure_logging` (what ``squidmesh worker`` does) for text or
JSON lines with those fields.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import IO

FIELDS = ("run_id", "workflow", "step", "attempt", "job_id")
_NOTHING: Mapping[str, object] = MappingProxyType({})
_CURRENT: ContextVar[Mapping[str, object]] = ContextVar("squidmesh_log_context", default=_NOTHING)


class RunContextFilter(logging.Filter):
    """Adds the current run context to each record (explicit ``extra`` values win)."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = _CURRENT.get()
        for name in FIELDS:
            if not hasattr(record, name):
                setattr(record, name, current.get(name))
        return True


_FILTER = RunContextFilter()


def get_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` with the run-context filter attached."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger


@contextlib.contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Attach ``fields`` to every record logged inside the block (and tasks it starts)."""
    token = _CURRENT.set({**_CURRENT.get(), **fields})
    try:
        yield
    finally:
        _CURRENT.reset(token)


def add_log_fields(**fields: object) -> None:
    """Add ``fields`` to the current ``log_context`` block (undone when the block ends)."""
    _CURRENT.set({**_CURRENT.get(), **fields})


LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")


def _utc(record: logging.LogRecord) -> str:
    stamp = datetime.fromtimestamp(record.created, UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {name: value for name in FIELDS if (value := getattr(record, name, None)) is not None}


class TextFormatter(logging.Formatter):
    """``2026-12-04T09:00:00.123Z INFO squidmesh.runtime: message run_id=... step=...``."""

    def format(self, record: logging.LogRecord) -> str:
        context = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        text = f"{_utc(record)} {record.levelname} {record.name}: {record.getMessage()}"
        text = f"{text} {context}" if context else text
        if record.exc_info:
            text = f"{text}\n{self.formatException(record.exc_info)}"
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers: the text format's fields, by name."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": _utc(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, sort_keys=True)


def configure_logging(
    level: str = "warning", fmt: str = "text", stream: IO[str] | None = None
) -> None:
    """Send every record at ``level`` or above to ``stream`` (stderr) in ``fmt``.

    Replaces the root logger's handlers: meant for the ``squidmesh`` command and
    other programs that own their process, not for libraries.

    Raises:
        ValueError: an unknown level or format.
    """
    if level not in LEVELS or fmt not in FORMATS:
        raise ValueError(f"level must be one of {LEVELS} and format one of {FORMATS}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_FILTER)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
