"""Regressions for defects found in review of the PostgreSQL store."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from squidmesh_backends.postgres import PostgresRunStore, migrate
from squidmesh_backends.postgres.store import notify_channel
from squidmesh_backends.runtime import JobOutcome, Runtime, RuntimeSettings, compose
from squidmesh_core import COMPLETE, RunId, RunStatus, StepContext, chain, manual, step, workflow
from squidmesh_core.testing.contracts.run_store import T0, Tokens, committed, new_run, run_id
from tests.postgres.lossy_proxy import LossyProxy
from tests.postgres.sql import PooledStore
from tests.services import drop_schema

pytestmark = pytest.mark.postgres

CALLS: list[str] = []


async def once(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    CALLS.append(ctx.run_id)
    return {"done": True}


ONE = workflow(
    "review.one",
    triggers=[manual()],
    steps=[step("only", once)],
    transitions=chain("only", COMPLETE),
)
SETTINGS = RuntimeSettings(poll_interval=timedelta(milliseconds=100))


async def test_a_created_run_whose_commit_reply_was_lost_is_still_a_success(
    pg_dsn: str, pg_schema: str
) -> None:
    async with LossyProxy(pg_dsn) as proxy:
        store = PostgresRunStore(proxy.dsn, schema=pg_schema, max_size=2)
        async with store:
            runtime = Runtime(store=store, workflows=[ONE], settings=SETTINGS)
            proxy.lose_next_commit_reply()
            started = await runtime.start_run(ONE, {})
            assert proxy.dropped == 1
            run = started.unwrap()
            assert not run.existing
            listed = await store.list_runs(workflow="review.one", status=None, limit=10)
            assert [r.id for r in listed] == [run.id]


async def test_a_delivery_whose_commit_reply_was_lost_still_runs_the_step(
    pg_dsn: str, pg_schema: str
) -> None:
    CALLS.clear()
    async with LossyProxy(pg_dsn) as proxy:
        store = PostgresRunStore(proxy.dsn, schema=pg_schema, max_size=2)
        async with store:
            runtime = Runtime(store=store, workflows=[ONE], settings=SETTINGS)
            run = (await runtime.start_run(ONE, {})).unwrap()
            claims = await store.claim_due(
                now=runtime.clock.now(),
                limit=1,
                lease_for=SETTINGS.lease,
                owner="t",
                mint=runtime.ids.new_lease_token,
            )
            proxy.lose_next_commit_reply()  # the commit that starts the attempt
            outcome = await runtime.worker.execute_job(claims[0].job_id, claims[0].lease_token)
            assert proxy.dropped == 1
            assert outcome is JobOutcome.SUCCEEDED
            done = await store.load(RunId(run.id))
    assert done is not None and done.status is RunStatus.COMPLETED
    assert [run.id] == CALLS


async def test_long_schema_names_get_a_valid_notify_channel(pg_dsn: str) -> None:
    schema = "s" * 63
    assert len(notify_channel(schema)) <= 63
    assert notify_channel("public") == "squidmesh_jobs"
    await migrate(pg_dsn, schema=schema)
    try:
        async with PostgresRunStore(pg_dsn, schema=schema, clock="caller") as store:
            woken = asyncio.Event()
            watcher = asyncio.create_task(store.watch(woken.set))
            await asyncio.wait_for(woken.wait(), 5)  # the first call, on connecting
            woken.clear()
            await committed(store, new_run(1))  # schedules a job: NOTIFY
            await asyncio.wait_for(woken.wait(), 5)
            watcher.cancel()
            claims = await store.claim_due(
                now=T0, limit=1, lease_for=timedelta(seconds=5), owner="o", mint=Tokens()
            )
            assert await store.release(claims[0].job_id, claims[0].lease_token)
    finally:
        drop_schema(pg_dsn, schema)


async def test_a_connection_the_server_ended_for_idleness_is_replaced(
    pg_dsn: str, pg_schema: str
) -> None:
    async with PooledStore(pg_dsn, schema=pg_schema, min_size=1, max_size=1) as store:
        # The pool's only connection: the server ends it after 100 ms of idleness.
        await store.pooled("SELECT set_config('idle_session_timeout', '100ms', false)")
        await asyncio.sleep(0.4)  # the server closes the pooled connection
        assert await store.load(run_id(1)) is None
        replaced = await store.pooled("SELECT current_setting('idle_session_timeout')")
        assert replaced != [("100ms",)], "the dead connection was replaced"


async def test_json_numbers_and_key_order_round_trip_exactly(pg_store: PostgresRunStore) -> None:
    from dataclasses import replace

    decision = new_run(1)
    payload = {"z": 1e23, "a": -0.0, "m": 0.1, "big": 2**70, "e": 1.5e-300}
    state = replace(decision.state, payload=payload, context=payload)
    await committed(pg_store, replace(decision, state=state))
    loaded = await pg_store.load(state.id)
    assert loaded is not None
    assert list(loaded.payload) == ["z", "a", "m", "big", "e"]
    for key, value in payload.items():
        assert type(loaded.payload[key]) is type(value)
        assert repr(loaded.payload[key]) == repr(value)


@pytest.mark.parametrize(
    "spelling",
    [
        "urn:uuid:00000000-0000-4000-8000-000000000001",
        "00000000000040008000000000000001",
        "00000000-0000-4000-8000-00000000000A",
        "{00000000-0000-4000-8000-000000000001}",
    ],
)
async def test_non_canonical_run_ids_load_as_missing(
    pg_store: PostgresRunStore, spelling: str
) -> None:
    await committed(pg_store, new_run(1))
    assert await pg_store.load(RunId(spelling)) is None


def test_the_blocking_facade_can_be_used_twice(pg_dsn: str, pg_schema: str) -> None:
    runtime = compose(workflows=[ONE], store=f"{pg_dsn}?schema={pg_schema}", settings=SETTINGS)
    for _ in range(2):
        with runtime.sync() as rt:
            run = rt.start_run(ONE, {}).unwrap()
            assert rt.wait_for(run.id).unwrap().status is RunStatus.COMPLETED
