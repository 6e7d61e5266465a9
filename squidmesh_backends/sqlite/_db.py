"""The SQLite store's plumbing: times as integers, and the one place driver errors are translated."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

from squidmesh_backends.errors import BackendError, BackendUnavailableError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _us(moment: datetime) -> int:
    """``moment`` as microseconds since the epoch (how the tables keep times)."""
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _time(us: int) -> datetime:
    """A time the tables keep, as a UTC ``datetime``."""
    return EPOCH + timedelta(microseconds=us)


def _query(conn: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> sqlite3.Cursor:
    """Run one statement, translating the driver's errors."""
    try:
        return conn.execute(sql, params)
    except sqlite3.Error as exc:
        raise _translate(exc) from exc
    except (UnicodeEncodeError, OverflowError) as exc:
        raise BackendError(f"SQLite store cannot hold a value: {exc}") from exc


def _translate(exc: sqlite3.Error) -> BackendError:
    """The one place sqlite3 errors become SquidMesh exceptions."""
    if isinstance(exc, sqlite3.OperationalError):
        return BackendUnavailableError(f"SQLite store unavailable: {exc}")
    return BackendError(f"SQLite store failed: {exc}")
