"""`squidmesh smoke --broker`, graceful worker shutdown, and the inline fast path."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

import pytest

from squidmesh_backends.probe import INLINE_STEPS, Counters
from squidmesh_backends.runtime import RuntimeSettings, compose
from squidmesh_core import (
    COMPLETE,
    AttemptStatus,
    RunStatus,
    StepContext,
    chain,
    manual,
    step,
    workflow,
)
from tests.cli.harness import squidmesh
from tests.taskiq.conftest import Workers, producer, wait_all
from tests.taskiq.worker_app import crashable

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(300)]


def test_smoke_runs_steps_in_a_separate_worker_process(
    pg_dsn: str, fresh_schema: str, redis_url: str, tmp_path: Path
) -> None:
    result = squidmesh(
        "smoke", "--store", f"{pg_dsn}?schema={fresh_schema}", "--broker", redis_url, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "squidmesh worker ready" in result.stdout
    assert "stopped with exit code 0" in result.stdout
    assert result.stdout.rstrip().endswith("smoke: all checks passed")


async def test_sigterm_releases_a_running_step_so_another_worker_takes_it_at_once(
    workers: Workers, pg_dsn: str, pg_schema: str
) -> None:
    # A 30 s lease: without the release on shutdown the survivor would wait that long.
    first = workers.start(1, SQUIDMESH_TEST_APP_LEASE="30")[0]
    store, api = await producer(pg_dsn, pg_schema)
    try:
        run_id = (await api.start_run(crashable, {})).unwrap().id
        while not any(w == "start" for w, *_ in workers.lines()):
            await asyncio.sleep(0.05)
        workers.start(1, SQUIDMESH_TEST_APP_LEASE="30")
        began = time.monotonic()
        assert await asyncio.to_thread(first.terminate) == 0
        stopped_after = time.monotonic() - began
        (run,) = await wait_all(store, [run_id], timeout=20)
        finished_after = time.monotonic() - began
    finally:
        await store.close()
    assert run.status is RunStatus.COMPLETED
    slow = run.step_run("slow")
    assert slow is not None
    assert [a.status for a in slow.attempts] == [AttemptStatus.LOST, AttemptStatus.SUCCEEDED]
    assert stopped_after < 3 + 5 + 2, "shutdown_timeout (3 s) plus the broker grace, bounded"
    assert finished_after < 15, "the released job was not picked up before its lease ran out"


async def noop(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    return {}


TEN = workflow(
    "inline.ten",
    triggers=[manual()],
    steps=[step(f"s{i}", noop) for i in range(10)],
    transitions=chain(*[f"s{i}" for i in range(10)], COMPLETE),
)


@pytest.mark.parametrize("inline", [True, False])
async def test_the_inline_fast_path_runs_following_steps_without_the_broker(
    redis_url: str, queue: str, pg_dsn: str, pg_schema: str, inline: bool
) -> None:
    from squidmesh_backends.taskiq import redis_stream_broker

    settings = RuntimeSettings(poll_interval=timedelta(milliseconds=100), inline_next_step=inline)
    broker = redis_stream_broker(redis_url, lease=settings.lease, queue=queue)
    probe = Counters()
    runtime = compose(
        workflows=[TEN],
        store=f"{pg_dsn}?schema={pg_schema}",
        broker=broker,
        settings=settings,
        probe=probe,
    )
    async with runtime:
        ids = [(await runtime.start_run(TEN, {})).unwrap().id for _ in range(5)]
        for run_id in ids:
            done = (await runtime.wait_for(run_id, timeout=timedelta(seconds=30))).unwrap()
            assert done.status is RunStatus.COMPLETED
        published = runtime.worker.executor.published  # type: ignore[attr-defined]
        inline_steps = probe[INLINE_STEPS]
    assert published + inline_steps == 50
    if inline:
        # A dispatcher poll may claim a next step before the inline claim does.
        assert inline_steps >= 25, (published, inline_steps)
    else:
        assert inline_steps == 0
