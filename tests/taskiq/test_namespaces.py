"""Two applications on one Redis database: each keeps to its own stream and consumer group.

Before namespaces both used one stream and one group, so each worker took the
other application's messages, refused them (no such job in its store) and
the other's runs waited a full lease. Here two real ``squidmesh worker``
processes, one per PostgreSQL schema, share the test Redis database.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
import redis

from examples.hello_app import hello
from squidmesh_backends.runtime import compose
from squidmesh_backends.runtime.bootstrap import default_namespace
from squidmesh_core.state import RunStatus
from tests.cli.harness import worker
from tests.services import drop_schema, migrated_schema, require_postgres, require_redis

pytestmark = pytest.mark.slow
RUNS = 30


async def start_and_finish(store: str, count: int) -> float:
    """Start ``count`` runs through a client and wait for all; seconds it took."""
    client = compose(workflows=[hello], store=store)
    began = time.monotonic()
    try:
        ids = [
            (await client.start_run("demo.hello", {"name": f"n{n}"})).unwrap().id
            for n in range(count)
        ]
        for run_id in ids:
            done = (await client.wait_for(run_id, timeout=timedelta(seconds=60))).unwrap()
            assert done.status is RunStatus.COMPLETED, done
    finally:
        await client.aclose()
    return time.monotonic() - began


def test_two_applications_share_one_redis_database_without_slowing_each_other() -> None:
    dsn, url = require_postgres(), require_redis()
    schemas = [asyncio.run(migrated_schema(dsn)) for _ in range(2)]
    stores = [f"{dsn}?schema={s}" for s in schemas]
    envs = [
        {"SQUIDMESH_TEST_CLI_STORE": store, "SQUIDMESH_TEST_CLI_BROKER": url} for store in stores
    ]
    names = [default_namespace(store) for store in stores]
    assert names[0] != names[1] and all(n.startswith("test.sm_test_") for n in names)
    try:
        with worker(env=envs[0]) as first:
            alone = asyncio.run(start_and_finish(stores[0], RUNS))
            with worker(env=envs[1]) as second:

                async def both() -> list[float]:
                    return list(await asyncio.gather(*(start_and_finish(s, RUNS) for s in stores)))

                together = asyncio.run(both())
        for process in (first, second):
            assert "refused a delivery" not in process.logs, process.logs[-2000:]
        assert f"stream squidmesh.{names[0]}" in first.ready_line
        assert f"stream squidmesh.{names[1]}" in second.ready_line
        # Sharing costs at most the second application's CPU on two cores, never a lease.
        assert max(together) < max(3 * alone, alone + 5), (alone, together)
        client = redis.Redis.from_url(url)
        try:
            for name in names:
                groups = client.xinfo_groups(f"squidmesh.{name}")
                assert [g["name"] for g in groups] == [f"squidmesh.{name}".encode()]
                assert all(g["pending"] == 0 for g in groups)
        finally:
            for name in names:
                client.delete(f"squidmesh.{name}")
            client.close()
    finally:
        for schema in schemas:
            drop_schema(dsn, schema)
