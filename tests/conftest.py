"""Service fixtures: PostgreSQL schemas and Redis queues of a test's own, removed afterwards."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator

import pytest
import redis

from squidmesh_backends.postgres import PostgresRunStore, migrate
from tests.services import drop_schema, new_schema_name, require_postgres, require_redis


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    return require_postgres()


@pytest.fixture
def fresh_schema(pg_dsn: str) -> Iterator[str]:
    """The name of a schema nobody uses yet (dropped after the test)."""
    schema = new_schema_name()
    yield schema
    drop_schema(pg_dsn, schema)


@pytest.fixture
async def pg_schema(pg_dsn: str, fresh_schema: str) -> str:
    """A freshly migrated schema."""
    await migrate(pg_dsn, schema=fresh_schema)
    return fresh_schema


@pytest.fixture
async def pg_store(pg_dsn: str, pg_schema: str) -> AsyncIterator[PostgresRunStore]:
    """A store on a migrated schema that compares times given by the caller."""
    async with PostgresRunStore(pg_dsn, schema=pg_schema, clock="caller", max_size=4) as store:
        yield store


@pytest.fixture(scope="session")
def redis_url() -> str:
    return require_redis()


@pytest.fixture
def queue(redis_url: str) -> Iterator[str]:
    """A Redis stream name of the test's own (deleted afterwards)."""
    name = f"sm_test_{secrets.token_hex(6)}"
    yield name
    client = redis.Redis.from_url(redis_url)
    client.delete(name)
    client.close()
