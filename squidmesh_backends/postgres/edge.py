"""The one place psycopg errors become SquidMesh exceptions.

Every public coroutine of this package runs its database work through
:func:`guarded`, which retries operations interrupted by a lost connection
(each attempt takes a fresh connection from the pool) and then translates what
is left. No psycopg exception leaves the package.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import PoolTimeout

from squidmesh_backends.errors import BackendError, BackendUnavailableError
from squidmesh_backends.logs import get_logger

T = TypeVar("T")
LOG = get_logger("squidmesh.postgres")

# Connection-level SQLSTATEs: class 08 (connection exception), the server going
# away (admin shutdown, crash shutdown, cannot connect now) and the server ending
# a session it found idle (idle_session_timeout, idle_in_transaction timeout).
_GONE = ("57P01", "57P02", "57P03", "57P05", "25P03")

# What a server says when it turns a connection down for good: retrying cannot
# make a missing database or role appear, or a wrong password right.
_REFUSED = (
    "does not exist",
    "authentication failed",
    "no pg_hba.conf entry",
    "password",
    "permission denied",
    "not permitted to log in",
    "invalid dsn",
    "invalid connection option",
    "pg_hba.conf rejects",
    "certificate",
    "ssl is not enabled",
    "server does not support ssl",
)


def is_refusal(exc: BaseException) -> bool:
    """True when the server (or libpq) turned the connection down in a way retrying cannot fix."""
    if not isinstance(exc, psycopg.OperationalError | psycopg.ProgrammingError):
        return False
    if exc.sqlstate is not None and exc.sqlstate[:2] not in ("28", "3D"):
        return False
    text = str(exc).lower()
    return any(marker in text for marker in _REFUSED)


def one_line(exc: BaseException) -> str:
    """A driver message on one line (libpq's hints come on their own lines)."""
    return " ".join(str(exc).split())


async def reach(dsn: str) -> None:
    """Connect once and hang up: raises the server's own reason when it cannot be reached."""
    conn = await psycopg.AsyncConnection.connect(dsn, connect_timeout=5)
    await conn.close()


def is_disconnect(exc: BaseException) -> bool:
    """True when ``exc`` means the server or the connection went away."""
    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, psycopg.OperationalError) or is_refusal(exc):
        return False
    state = exc.sqlstate
    if state is None:
        return not isinstance(exc, pg_errors.QueryCanceled | pg_errors.PipelineAborted)
    return state.startswith("08") or state in _GONE


def is_contention(exc: BaseException) -> bool:
    """True for serialization failures and deadlocks: safe to retry the transaction."""
    return isinstance(exc, pg_errors.SerializationFailure | pg_errors.DeadlockDetected)


def translate(exc: psycopg.Error, what: str) -> BackendError:
    """A SquidMesh exception describing ``exc`` (raised while doing ``what``)."""
    if is_refusal(exc):
        return BackendError(f"PostgreSQL refused the connection while {what}: {one_line(exc)}")
    if is_disconnect(exc):
        return BackendUnavailableError(f"PostgreSQL unavailable while {what}: {one_line(exc)}")
    if isinstance(exc, pg_errors.QueryCanceled):
        return BackendUnavailableError(
            f"PostgreSQL cancelled a statement while {what}: {one_line(exc)}"
        )
    return BackendError(f"PostgreSQL failed while {what}: {type(exc).__name__}: {one_line(exc)}")


async def guarded(
    what: str,
    work: Callable[[], Awaitable[T]],
    *,
    retry_for: float,
) -> T:
    """Run ``work``; retry it while the connection keeps failing, up to ``retry_for`` seconds.

    Retrying is safe for every store operation: reads have no effect, claims
    and heartbeats only touch leases, and a commit whose outcome was lost with
    the connection is refused on its second try by the version guard. The first
    retry logs one WARNING; later ones log at DEBUG. A refusal (missing
    database or role, bad password) is raised at once.
    """
    deadline = time.monotonic() + retry_for
    pause = 0.05
    retries = 0
    while True:
        try:
            return await work()
        except psycopg.Error as exc:
            if is_disconnect(exc) and time.monotonic() + pause < deadline:
                level = logging.WARNING if retries == 0 else logging.DEBUG
                LOG.log(
                    level,
                    "%s: connection lost or refused (%s); retrying for up to %.0fs",
                    what,
                    one_line(exc),
                    retry_for,
                )
                retries += 1
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)
                continue
            raise translate(exc, what) from exc
        except (UnicodeEncodeError, OverflowError) as exc:
            raise BackendError(f"PostgreSQL cannot hold a value while {what}: {exc}") from exc
