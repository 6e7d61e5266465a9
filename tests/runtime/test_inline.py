"""The inline fast path and lease renewal on delivery (regressions from review)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from datetime import timedelta

import pytest
from taskiq import InMemoryBroker
from taskiq.message import BrokerMessage

from squidmesh_backends.memory import MemoryRunStore
from squidmesh_backends.probe import CLAIMED, COMMITS, INLINE_STEPS, Counters
from squidmesh_backends.runtime import JobOutcome, Runtime, RuntimeSettings
from squidmesh_backends.taskiq import TaskiqExecutor
from squidmesh_core import (
    COMPLETE,
    Retry,
    RunId,
    RunStatus,
    StepContext,
    WorkflowDefinition,
    chain,
    manual,
    step,
    workflow,
)
from squidmesh_core.protocol import JobId, LeaseToken, RunState
from squidmesh_core.testing.contracts.executor import settle
from squidmesh_core.views import Run
from tests.lookbehind import job_rows

GATE = asyncio.Event()


async def noop(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    return {}


ENTERED: list[str] = []


async def gated(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    ENTERED.append(ctx.run_id)
    await GATE.wait()
    return {}


FIVE = workflow(
    "inline.five",
    triggers=[manual()],
    steps=[step(f"s{i}", noop) for i in range(5)],
    transitions=chain(*[f"s{i}" for i in range(5)], COMPLETE),
)
THEN_BLOCK = workflow(
    "inline.then_block",
    triggers=[manual()],
    steps=[step("a", noop), step("b", gated)],
    transitions=chain("a", "b", COMPLETE),
)
BLOCK_THEN = workflow(
    "inline.block_then",
    triggers=[manual()],
    steps=[step("a", gated), step("b", noop)],
    transitions=chain("a", "b", COMPLETE),
)
GATED = workflow(
    "inline.gated", triggers=[manual()], steps=[step("b", gated)], transitions=chain("b", COMPLETE)
)
SLOW_POLL = RuntimeSettings(
    poll_interval=timedelta(seconds=10),
    lease=timedelta(seconds=4),
    heartbeat_every=timedelta(seconds=1),
    shutdown_timeout=timedelta(milliseconds=200),
)


async def run_timed(rt: Runtime, flow: WorkflowDefinition) -> tuple[Run, float]:
    """Start a run of ``flow``, wait until it is finished: the run, and the seconds taken."""
    began = time.monotonic()
    run = (await rt.start_run(flow, {})).unwrap()
    done = (await rt.wait_for(run.id, timeout=timedelta(seconds=10))).unwrap()
    return done, time.monotonic() - began


@pytest.mark.parametrize("limit", [1, 2, 64])
async def test_the_chain_limit_never_strands_a_leased_job(limit: int) -> None:
    settings = RuntimeSettings(
        poll_interval=timedelta(seconds=10),
        lease=timedelta(seconds=4),
        heartbeat_every=timedelta(seconds=1),
        inline_chain_limit=limit,
    )
    probe = Counters()
    async with Runtime(
        store=MemoryRunStore(), workflows=[FIVE], settings=settings, probe=probe
    ) as rt:
        done, elapsed = await run_timed(rt, FIVE)
    assert done.status is RunStatus.COMPLETED
    assert elapsed < 2, f"a step waited for a lease to lapse ({elapsed:.1f}s)"
    assert probe[INLINE_STEPS] == 4 - 4 // limit if limit < 5 else 4


async def test_shutdown_releases_the_lease_the_inline_chain_holds_now() -> None:
    global GATE  # noqa: PLW0603  (a fresh event on this test's loop)
    GATE = asyncio.Event()
    store = MemoryRunStore()
    probe = Counters()
    rt = Runtime(store=store, workflows=[THEN_BLOCK], settings=SLOW_POLL, probe=probe)
    await rt.start()
    run = (await rt.start_run(THEN_BLOCK, {})).unwrap()
    b_job = JobId(f"{run.id}/b/1")
    await settle(lambda: probe[INLINE_STEPS] == 1)
    assert (await job_rows(store))[b_job][1] is not None  # b is leased and running
    await rt.stop()
    assert (await job_rows(store))[b_job][1] is None, "b's lease was not released"
    GATE.set()


async def test_a_late_delivery_renews_its_lease_before_starting() -> None:
    global GATE  # noqa: PLW0603  (a fresh event on this test's loop)
    GATE = asyncio.Event()
    store = MemoryRunStore()
    settings = RuntimeSettings(
        poll_interval=timedelta(seconds=10),
        lease=timedelta(seconds=1),
        heartbeat_every=timedelta(milliseconds=900),
        inline_next_step=False,
    )
    rt = Runtime(store=store, workflows=[GATED], settings=settings)
    await rt.start_run(GATED, {})
    now = rt.clock.now()
    claims = await store.claim_due(
        now=now, limit=1, lease_for=settings.lease, owner="old", mint=rt.ids.new_lease_token
    )
    await asyncio.sleep(1.1)  # the message sat in a queue until its lease lapsed
    delivery = asyncio.create_task(rt.worker.execute(claims[0].job_id, claims[0].lease_token))
    await asyncio.sleep(0.05)
    # Renewed on delivery: nobody else may claim it while it runs.
    assert (
        await store.claim_due(
            now=rt.clock.now(),
            limit=5,
            lease_for=settings.lease,
            owner="x",
            mint=rt.ids.new_lease_token,
        )
        == []
    )
    GATE.set()
    assert await delivery is JobOutcome.SUCCEEDED


async def test_a_delivery_whose_lease_was_taken_over_does_not_start() -> None:
    store = MemoryRunStore()
    settings = RuntimeSettings(
        lease=timedelta(seconds=1), heartbeat_every=timedelta(milliseconds=500)
    )
    rt = Runtime(store=store, workflows=[FIVE], settings=settings)
    run = (await rt.start_run(FIVE, {})).unwrap()
    first = await store.claim_due(
        now=rt.clock.now(),
        limit=1,
        lease_for=settings.lease,
        owner="a",
        mint=rt.ids.new_lease_token,
    )
    later = rt.clock.now() + timedelta(seconds=2)
    await store.claim_due(
        now=later, limit=1, lease_for=settings.lease, owner="b", mint=rt.ids.new_lease_token
    )
    assert await rt.worker.execute(first[0].job_id, first[0].lease_token) is JobOutcome.STALE
    state = await store.load(RunId(run.id))
    assert state is not None and state.steps[0].attempts == ()


FORK = workflow(
    "inline.fork",
    triggers=[manual()],
    steps=[step("a", gated), step("b", noop), step("c", noop, after=["a", "b"])],
)


async def test_after_a_conflict_the_outcome_and_the_hand_off_are_one_commit() -> None:
    """The run changed while ``a`` ran (``b`` finished): decide again, hand ``c`` off at once."""
    global GATE  # noqa: PLW0603  (a fresh event on this test's loop)
    GATE = asyncio.Event()
    probe = Counters()
    store = MemoryRunStore(probe=probe)
    async with Runtime(store=store, workflows=[FORK], settings=SLOW_POLL, probe=probe) as rt:
        run = (await rt.start_run(FORK, {})).unwrap()
        await settle(lambda: run.id in ENTERED)
        b_done = await settle_state(store, run.id, lambda s: _status(s, "b") == "completed")
        commits = probe[COMMITS]
        GATE.set()  # a succeeds on a run that moved on: its first commit is refused
        done = (await rt.wait_for(run.id, timeout=timedelta(seconds=10))).unwrap()
    assert done.status is RunStatus.COMPLETED
    assert probe[INLINE_STEPS] == 1  # c ran on a's lease, no dispatcher, no claim
    assert probe[CLAIMED] == 2  # a and b only
    # a's outcome with c's start, then c's outcome: two commits after b's
    assert probe[COMMITS] == commits + 2
    assert done.version == b_done.version + 2


def _status(state: RunState, step: str) -> str | None:
    found = state.step_run(step)
    return None if found is None else found.status.value


async def settle_state(
    store: MemoryRunStore, run_id: str, done: Callable[[RunState], bool]
) -> RunState:
    """The run once ``done`` holds for it (polled; at most five seconds)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        state = await store.load(RunId(run_id))
        if state is not None and done(state):
            return state
        await asyncio.sleep(0.01)
    raise AssertionError(f"run {run_id} never reached the expected state")


async def test_messages_turned_away_while_stopping_are_handed_back() -> None:
    release = asyncio.Event()

    async def handler(job_id: JobId, lease_token: LeaseToken) -> None:
        await release.wait()

    executor = TaskiqExecutor(InMemoryBroker(), concurrency=2)
    await executor.start(handler)
    await executor.submit(JobId("running"), LeaseToken("t1"))
    await settle(lambda: executor.free_slots < 2 and executor.received == 1)
    stopping = asyncio.create_task(executor.stop(timeout=timedelta(milliseconds=300)))
    await asyncio.sleep(0.05)
    await executor.task.kiq("late", "t2")  # arrives while stopping
    unfinished = await stopping
    assert sorted(unfinished) == [("late", "t2"), ("running", "t1")]
    release.set()


class EndingBroker(InMemoryBroker):
    """A broker whose listen() ends at once, as a non-Redis broker might."""

    def __init__(self) -> None:
        super().__init__()
        self.listens = 0

    async def kick(self, message: BrokerMessage) -> None:
        return None

    async def listen(self) -> AsyncGenerator[bytes, None]:
        self.listens += 1
        for _ in ():
            yield b""


async def test_the_receiver_is_restarted_when_the_broker_stops_listening(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import squidmesh_backends.taskiq.executor as module

    monkeypatch.setattr(module, "InMemoryBroker", type("NeverInMemory", (), {}))
    broker = EndingBroker()
    executor = TaskiqExecutor(broker, concurrency=1)

    async def handler(job_id: JobId, lease_token: LeaseToken) -> None:
        return None

    await executor.start(handler)
    await settle(lambda: broker.listens >= 3, timeout=5)
    assert executor.receiver_restarts >= 2
    await executor.stop(timeout=timedelta(milliseconds=100))


async def test_each_inline_transition_is_one_commit_and_no_claim() -> None:
    """A step's outcome and the next step's start share one commit; no claim, no reload."""
    probe = Counters()
    store = MemoryRunStore(probe=probe)
    claims_by_name = 0
    claim_job = store.claim_job

    async def counting_claim_job(*args: object, **kwargs: object) -> object:
        nonlocal claims_by_name
        claims_by_name += 1
        return await claim_job(*args, **kwargs)  # type: ignore[arg-type]

    store.claim_job = counting_claim_job  # type: ignore[method-assign,assignment]
    async with Runtime(store=store, workflows=[FIVE], settings=SLOW_POLL, probe=probe) as rt:
        run = (await rt.start_run(FIVE, {})).unwrap()
        done = (await rt.wait_for(run.id, timeout=timedelta(seconds=10))).unwrap()
    assert done.status is RunStatus.COMPLETED
    assert probe[INLINE_STEPS] == 4
    # created, first step started, four "outcome + next start" commits, last outcome
    assert probe[COMMITS] == 7
    assert claims_by_name == 0
    assert done.version == 7


async def test_a_cancel_during_an_inline_step_wins_over_the_combined_commit() -> None:
    global GATE  # noqa: PLW0603  (a fresh event on this test's loop)
    GATE = asyncio.Event()
    probe = Counters()
    store = MemoryRunStore(probe=probe)
    async with Runtime(store=store, workflows=[BLOCK_THEN], settings=SLOW_POLL, probe=probe) as rt:
        run = (await rt.start_run(BLOCK_THEN, {})).unwrap()
        await settle(lambda: run.id in ENTERED)  # a is running
        cancelled = (await rt.cancel_run(run.id)).unwrap()
        commits = probe[COMMITS]
        GATE.set()  # a succeeds on a run that changed: its combined commit is refused
        done = (await rt.wait_for(run.id, timeout=timedelta(seconds=10))).unwrap()
    assert cancelled.status is RunStatus.CANCELLING
    assert done.status is RunStatus.CANCELLED
    assert probe[INLINE_STEPS] == 0
    assert [s.step for s in done.history or ()] == ["a"]  # b never started
    assert probe[COMMITS] == commits + 1  # a's outcome, decided again on the stored state


FAILS_ONCE: dict[str, int] = {}


async def fails_once(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    FAILS_ONCE[ctx.run_id] = FAILS_ONCE.get(ctx.run_id, 0) + 1
    if ctx.attempt == 1:
        raise ConnectionError("first try fails")
    return {}


RETRIED = workflow(
    "inline.retried",
    triggers=[manual()],
    steps=[step("a", noop), step("b", fails_once, retry=Retry(max_attempts=2))],
    transitions=chain("a", "b", COMPLETE),
)


async def test_a_retry_due_at_once_after_an_inline_step_failed_is_not_left_to_the_poll() -> None:
    """A failure on the inline path wakes the dispatcher for the retry it makes due now."""
    async with Runtime(store=MemoryRunStore(), workflows=[RETRIED], settings=SLOW_POLL) as rt:
        done, elapsed = await run_timed(rt, RETRIED)
    assert done.status is RunStatus.COMPLETED
    assert FAILS_ONCE[done.id] == 2
    assert elapsed < 2, f"the retry waited for the dispatcher's poll ({elapsed:.1f}s)"
