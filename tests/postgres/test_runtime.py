"""The real runtime over PostgreSQL: hostile input, forged deliveries, wake-ups, two runtimes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from pydantic import BaseModel, ConfigDict

from squidmesh_backends.postgres import PostgresRunStore
from squidmesh_backends.probe import CLAIMED, Counters
from squidmesh_backends.runtime import JobOutcome, Runtime, RuntimeSettings, compose
from squidmesh_core import (
    COMPLETE,
    InvalidPayload,
    JsonLimits,
    RunStatus,
    StepContext,
    chain,
    manual,
    step,
    workflow,
)
from squidmesh_core.protocol import JobId, LeaseToken
from tests.lookbehind import job_rows
from tests.postgres.counting import CountingFlow
from tests.postgres.sql import execute

pytestmark = pytest.mark.postgres

FAST = RuntimeSettings(
    poll_interval=timedelta(milliseconds=100),
    lease=timedelta(seconds=5),
    heartbeat_every=timedelta(seconds=1),
    shutdown_timeout=timedelta(seconds=2),
    concurrency=8,
)


async def echo(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    return {"echo": data}


async def emit(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    return {"emitted": True}


class Texts(BaseModel):
    model_config = ConfigDict(extra="forbid")
    quote: str = ""
    percent: str = ""
    jsonish: str = ""
    unicode: str = ""
    backslash: str = ""
    text: str = ""


class Kind(BaseModel):
    kind: str


ECHO = workflow(
    "pg.echo",
    triggers=[manual(payload=Texts)],
    steps=[step("echo", echo)],
    transitions=chain("echo", COMPLETE),
    limits=JsonLimits(max_bytes=64 * 1024),
)
EMIT = workflow(
    "pg.emit", triggers=[manual()], steps=[step("emit", emit)], transitions=chain("emit", COMPLETE)
)


@pytest.fixture
async def store(pg_dsn: str, pg_schema: str) -> AsyncIterator[PostgresRunStore]:
    async with PostgresRunStore(pg_dsn, schema=pg_schema) as opened:
        yield opened


async def row_counts(store: PostgresRunStore) -> tuple[int, ...]:
    s = f'"{store.schema}"'
    rows = await execute(
        store,
        f"SELECT (SELECT count(*) FROM {s}.squidmesh_runs),"
        f" (SELECT count(*) FROM {s}.squidmesh_step_runs),"
        f" (SELECT count(*) FROM {s}.squidmesh_attempts),"
        f" (SELECT count(*) FROM {s}.squidmesh_jobs)",
    )
    return tuple(int(v) for v in rows[0])


# ---------------------------------------------------------------- hostile input


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"text": "nul\x00byte"}, "NUL"),
        ({"text": "ok", "nul\x00key": 1}, "NUL"),
        ({"text": "lone \ud800 surrogate"}, "surrogate"),
        ({"text": "x" * (70 * 1024)}, "size limit"),
    ],
    ids=["nul-value", "nul-key", "surrogate", "over-limit"],
)
async def test_unstorable_payloads_are_refused_before_any_write(
    store: PostgresRunStore, payload: dict[str, object], reason: str
) -> None:
    runtime = Runtime(store=store, workflows=[ECHO], settings=FAST)
    result = await runtime.start_run(ECHO, payload)
    refused = result.failure()
    assert isinstance(refused, InvalidPayload)
    assert reason in str(refused.reason)
    assert await row_counts(store) == (0, 0, 0, 0)


async def test_deeply_nested_payloads_are_refused(store: PostgresRunStore) -> None:
    deep: dict[str, object] = {}
    cursor = deep
    for _ in range(100):
        cursor["d"] = {}
        cursor = cursor["d"]  # type: ignore[assignment]
    runtime = Runtime(store=store, workflows=[ECHO], settings=FAST)
    refused = (await runtime.start_run(ECHO, deep)).failure()
    assert isinstance(refused, InvalidPayload)
    assert "deep" in str(refused.reason) or "nest" in str(refused.reason)
    assert await row_counts(store) == (0, 0, 0, 0)


async def test_the_default_limit_is_one_mebibyte(store: PostgresRunStore) -> None:
    runtime = Runtime(store=store, workflows=[EMIT], settings=FAST)
    refused = (await runtime.start_run(EMIT, {"big": "x" * (1024 * 1024)})).failure()
    assert isinstance(refused, InvalidPayload)
    assert "size limit of 1048576 bytes" in str(refused.reason)
    assert await row_counts(store) == (0, 0, 0, 0)


SQLISH = {
    "quote": "O'Brien\"; DROP TABLE squidmesh_runs; --",
    "percent": "%s %(x)s %% $1 $$",
    "jsonish": '{"a": 1}',
    "unicode": "na\u00efve \u2603 \U0001f600",
    "backslash": "\\x00 \\u0000",
}


async def test_sql_metacharacters_round_trip_exactly(store: PostgresRunStore) -> None:
    async with Runtime(store=store, workflows=[ECHO], settings=FAST) as runtime:
        started = (await runtime.start_run(ECHO, SQLISH, idempotency_key="k'; --")).unwrap()
        run = (await runtime.wait_for(started.id, timeout=timedelta(seconds=10))).unwrap()
    assert run.status is RunStatus.COMPLETED
    assert run.payload == {**SQLISH, "text": ""}
    assert run.context == {"echo": {**SQLISH, "text": ""}}
    again = (await runtime.start_run(ECHO, SQLISH, idempotency_key="k'; --")).unwrap()
    assert again.existing and again.id == started.id


BAD_OUTPUTS: dict[str, object] = {
    "nul": {"bad": "nul\x00"},
    "surrogate": {"bad": "\udfff"},
    "huge": {"big": "y" * (1024 * 1024 + 1)},
    "nan": {"n": float("nan")},
    "not-json": {"when": object()},
}


async def bad_output(data: dict[str, object], ctx: StepContext) -> object:
    return BAD_OUTPUTS[str(data["kind"])]


BAD = workflow(
    "pg.bad_output",
    triggers=[manual(payload=Kind)],
    steps=[step("produce", bad_output)],
    transitions=chain("produce", COMPLETE),
)


@pytest.mark.parametrize("kind", sorted(BAD_OUTPUTS))
async def test_unstorable_step_output_fails_the_attempt_cleanly(
    store: PostgresRunStore, kind: str
) -> None:
    async with Runtime(store=store, workflows=[BAD], settings=FAST) as runtime:
        started = (await runtime.start_run(BAD, {"kind": kind})).unwrap()
        run = (await runtime.wait_for(started.id, timeout=timedelta(seconds=10))).unwrap()
    assert run.status is RunStatus.FAILED
    assert run.history is not None
    attempt = run.history[0].attempts[-1]
    assert attempt.error is not None
    assert attempt.error.kind == "invalid_output"
    assert await row_counts(store) == (1, 1, 1, 0)


# ---------------------------------------------------------------- forged and stale deliveries


async def test_forged_and_stale_deliveries_change_nothing(store: PostgresRunStore) -> None:
    runtime = Runtime(store=store, workflows=[EMIT], settings=FAST)
    started = (await runtime.start_run(EMIT, {})).unwrap()
    job = JobId(f"{started.id}/emit/1")
    before = await store.load(started.id)
    engine = runtime.worker
    assert await engine.execute_job(JobId("garbage"), LeaseToken("t")) is JobOutcome.FORGED
    assert await engine.execute_job(job, LeaseToken("forged-token")) is JobOutcome.STALE
    assert await store.load(started.id) == before
    claims = await store.claim_due(
        now=runtime.clock.now(),
        limit=1,
        lease_for=FAST.lease,
        owner="t",
        mint=runtime.ids.new_lease_token,
    )
    assert await engine.execute_job(job, claims[0].lease_token) is JobOutcome.SUCCEEDED
    # The same message again, and the old token once more: both stale, nothing rewritten.
    after = await store.load(started.id)
    assert await engine.execute_job(job, claims[0].lease_token) is JobOutcome.STALE
    assert await store.load(started.id) == after
    assert after is not None and after.status is RunStatus.COMPLETED


async def test_forged_tokens_never_reach_the_driver(
    store: PostgresRunStore, caplog: pytest.LogCaptureFixture
) -> None:
    # Regression: a token holding a NUL or a lone surrogate reached psycopg and
    # crashed the handler with a traceback (memory and SQLite dropped it as stale).
    runtime = Runtime(store=store, workflows=[EMIT], settings=FAST)
    started = (await runtime.start_run(EMIT, {})).unwrap()
    job = JobId(f"{started.id}/emit/1")
    before = await store.load(started.id)
    for token in ("t\x00", "\ud800", "x" * 10_000, ""):
        assert await runtime.worker.execute_job(job, LeaseToken(token)) is JobOutcome.FORGED
    assert await store.load(started.id) == before
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


# ---------------------------------------------------------------- wake-ups


async def test_notify_wakes_a_sleeping_dispatcher_in_another_runtime(
    pg_dsn: str, pg_schema: str
) -> None:
    sleepy = RuntimeSettings(poll_interval=timedelta(seconds=30))
    async with (
        PostgresRunStore(pg_dsn, schema=pg_schema) as worker_store,
        PostgresRunStore(pg_dsn, schema=pg_schema) as api_store,
        Runtime(store=worker_store, workflows=[EMIT], settings=sleepy) as worker,
    ):
        await asyncio.sleep(0.3)  # the worker has polled once and sleeps for 30 s
        api = Runtime(store=api_store, workflows=[EMIT], settings=sleepy)  # never started
        began = time.monotonic()
        started = (await api.start_run(EMIT, {})).unwrap()
        run = (await worker.wait_for(started.id, timeout=timedelta(seconds=10))).unwrap()
        elapsed = time.monotonic() - began
    assert run.status is RunStatus.COMPLETED
    assert elapsed < 2.0, f"the worker took {elapsed:.2f}s: it did not wake on NOTIFY"


# ---------------------------------------------------------------- two runtimes, one database


SHARED = CountingFlow("pg.shared")


@pytest.mark.slow
async def test_two_runtimes_complete_500_runs_without_running_a_step_twice(
    pg_dsn: str, pg_schema: str
) -> None:
    SHARED.calls.clear()
    settings = RuntimeSettings(
        poll_interval=timedelta(milliseconds=200),
        lease=timedelta(seconds=30),
        heartbeat_every=timedelta(seconds=5),
        concurrency=16,
        claim_batch=16,
    )
    left_probe, right_probe = Counters(), Counters()
    async with (
        PostgresRunStore(pg_dsn, schema=pg_schema, max_size=6) as left_store,
        PostgresRunStore(pg_dsn, schema=pg_schema, max_size=6) as right_store,
        Runtime(
            store=left_store, workflows=[SHARED.definition], settings=settings, probe=left_probe
        ) as left,
        Runtime(
            store=right_store, workflows=[SHARED.definition], settings=settings, probe=right_probe
        ) as right,
    ):
        ids = [
            (await (left if i % 2 else right).start_run(SHARED.definition, {})).unwrap().id
            for i in range(500)
        ]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            done = await execute(
                left_store,
                f'SELECT count(*) FROM "{pg_schema}".squidmesh_runs WHERE status = %s',
                ("completed",),
            )
            if done[0][0] == 500:
                break
            await asyncio.sleep(0.2)
        claimed = (left_probe[CLAIMED], right_probe[CLAIMED])
        runs = await left_store.list_runs(workflow="pg.shared", status=None, limit=1000)
        leftover_jobs = await job_rows(left_store)
    assert {r.id for r in runs} == set(ids)
    assert all(r.status is RunStatus.COMPLETED for r in runs)
    assert all(len(s.attempts) == 1 for r in runs for s in r.steps)
    assert SHARED.every_attempt_ran_once(500), "a step attempt was lost or ran twice"
    assert min(claimed) > 0, f"one runtime did all the work: {claimed}"
    assert leftover_jobs == {}


def test_the_blocking_facade_works_on_postgres(pg_dsn: str, pg_schema: str) -> None:
    runtime = compose(workflows=[EMIT], store=f"{pg_dsn}?schema={pg_schema}", settings=FAST)
    with runtime.sync() as rt:
        started = rt.start_run(EMIT, {}).unwrap()
        done = rt.wait_for(started.id, timeout=timedelta(seconds=10)).unwrap()
    assert done.status is RunStatus.COMPLETED
    assert isinstance(runtime.store, PostgresRunStore)
    assert not runtime.store.is_open  # closed with the facade
