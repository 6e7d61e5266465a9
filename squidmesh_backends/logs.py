"""Logging with the run attached: every ``squidmesh.*`` record carries run context.

Records from SquidMesh's loggers get the attributes ``run_id``, ``workflow``,
``step``, ``attempt`` and ``job_id`` (``None`` outside a run), taken from the
code path that logs them, so a formatter or a JSON log handler can always use
them. Nothing is printed; configure handlers as usual in the host application.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from types import MappingProxyType

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
