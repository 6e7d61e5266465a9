"""Where the test services are, and what to do when one is missing.

Addresses come from ``SQUIDMESH_TEST_DSN`` and ``SQUIDMESH_TEST_REDIS_URL``.
A missing service skips its tests with the reason locally and fails them under
``CI=true``.
"""

from __future__ import annotations

import functools
import os
import secrets
import socket

import psycopg
import pytest

from squidmesh_backends.postgres import migrate

DSN = os.environ.get("SQUIDMESH_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@functools.cache
def postgres_problem() -> str | None:
    """Why PostgreSQL cannot be used, or ``None`` when it can."""
    try:
        with psycopg.connect(DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at SQUIDMESH_TEST_DSN={DSN} is not reachable: {exc}"
    return None


def require_postgres() -> str:
    """The DSN, or skip (fail under CI) when the server is unreachable."""
    problem = postgres_problem()
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    return DSN


def new_schema_name() -> str:
    return f"sm_test_{secrets.token_hex(6)}"


async def migrated_schema(dsn: str) -> str:
    schema = new_schema_name()
    await migrate(dsn, schema=schema)
    return schema


def drop_schema(dsn: str, schema: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def truncate(dsn: str, schema: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'TRUNCATE "{schema}".squidmesh_runs CASCADE')


REDIS_URL = os.environ.get("SQUIDMESH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@functools.cache
def redis_problem() -> str | None:
    """Why Redis cannot be used, or ``None`` when it can."""
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
        client.ping()
        client.close()
    except redis.RedisError as exc:
        return f"Redis at SQUIDMESH_TEST_REDIS_URL={REDIS_URL} is not reachable: {exc}"
    return None


def require_redis() -> str:
    """The Redis URL, or skip (fail under CI) when the server is unreachable."""
    problem = redis_problem()
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    return REDIS_URL


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
