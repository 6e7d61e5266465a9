"""Cron triggers on the runtime, with a fake clock: ticks, catch-up, metadata, activation."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import BaseModel

from squidmesh_backends.errors import ConfigurationError
from squidmesh_backends.memory import MemoryRunStore
from squidmesh_backends.runtime import FakeClock, Runtime, RuntimeSettings
from squidmesh_core import COMPLETE, RunStatus, StepContext, chain, cron, manual, step, workflow
from squidmesh_core.commands import Emit, Topic
from squidmesh_core.views import Run

T0 = datetime(2026, 6, 1, 12, 2, tzinfo=UTC)
SEEN: list[dict[str, object] | None] = []


async def report(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    SEEN.append(None if ctx.schedule is None else dict(ctx.schedule))
    return {"tick": None if ctx.schedule is None else ctx.schedule["tick"]}


class Report(BaseModel):
    region: str = "eu"


EVERY_FIVE = workflow(
    "cron.every_five",
    triggers=[cron("five", "*/5 * * * *", timezone="Europe/Riga", payload=Report), manual()],
    steps=[step("report", report)],
    transitions=chain("report", COMPLETE),
)


class Needs(BaseModel):
    account: str


NEEDS_PAYLOAD = workflow(
    "cron.needs_payload",
    triggers=[cron("nightly", "0 3 * * *", payload=Needs)],
    steps=[step("report", report)],
    transitions=chain("report", COMPLETE),
)
MANUAL_ONLY = workflow(
    "cron.manual_only",
    triggers=[manual()],
    steps=[step("report", report)],
    transitions=chain("report", COMPLETE),
)


def schedule_of(run: Run) -> Mapping[str, object]:
    found = run.context["schedule"]
    assert isinstance(found, Mapping)
    return found


class Events:
    def __init__(self) -> None:
        self.seen: list[Emit] = []

    def publish(self, event: Emit) -> None:
        self.seen.append(event)


def runtime(
    store: MemoryRunStore | None = None,
    *,
    clock: FakeClock | None = None,
    window: timedelta | None = None,
    sink: Events | None = None,
) -> Runtime:
    return Runtime(
        store=store or MemoryRunStore(),
        workflows=[EVERY_FIVE, MANUAL_ONLY],
        clock=clock or FakeClock(T0),
        settings=RuntimeSettings(cron_misfire_window=window),
        sinks=[sink] if sink else [],
        cron=["cron.every_five"],
    )


async def test_one_run_per_tick_and_none_before_the_first_tick() -> None:
    clock = FakeClock(T0)
    rt = runtime(clock=clock)
    loop = rt.cron_loop
    assert loop is not None
    assert await loop.tick_once(clock.now()) == []  # 12:02, activated now: nothing due
    clock.set(T0 + timedelta(minutes=3))  # 12:05
    (first,) = await loop.tick_once(clock.now())
    assert await loop.tick_once(clock.now()) == []  # the same tick again: nothing new
    run = (await rt.inspect_run(first)).unwrap()
    assert run.trigger == "five"
    assert run.payload == {"region": "eu"}
    assert run.context["schedule"] == {
        "id": "cron:five:2026-06-01T12:05:00Z",
        "workflow": "cron.every_five",
        "trigger": "five",
        "expression": "*/5 * * * *",
        "timezone": "Europe/Riga",
        "tick": "2026-06-01T12:05:00Z",
    }


async def test_only_the_newest_missed_tick_runs_by_default_and_the_rest_are_reported() -> None:
    clock, events = FakeClock(T0), Events()
    store = MemoryRunStore()
    rt = runtime(store, clock=clock, sink=events)
    assert rt.cron_loop is not None
    clock.set(T0 + timedelta(minutes=3))
    await rt.cron_loop.tick_once(clock.now())  # 12:05 started
    clock.set(T0 + timedelta(hours=1, minutes=1))  # 13:03: 12:10 .. 13:00 were missed
    (newest,) = await rt.cron_loop.tick_once(clock.now())
    run = (await rt.inspect_run(newest)).unwrap()
    assert schedule_of(run)["tick"] == "2026-06-01T13:00:00Z"
    (skipped,) = [e for e in events.seen if e.topic is Topic.CRON_TICKS_SKIPPED]
    assert skipped.attributes["skipped"] == 10
    assert skipped.run_id == newest


async def test_a_misfire_window_catches_up_the_ticks_inside_it() -> None:
    clock = FakeClock(T0)
    rt = runtime(clock=clock, window=timedelta(minutes=12))
    assert rt.cron_loop is not None
    clock.set(T0 + timedelta(minutes=3))
    await rt.cron_loop.tick_once(clock.now())
    clock.set(T0 + timedelta(hours=1, minutes=1))
    started = await rt.cron_loop.tick_once(clock.now())
    ticks = [schedule_of((await rt.inspect_run(r)).unwrap())["tick"] for r in started]
    assert ticks == ["2026-06-01T12:55:00Z", "2026-06-01T13:00:00Z"]


async def test_a_second_loop_over_the_same_store_never_duplicates_a_tick() -> None:
    store, clock = MemoryRunStore(), FakeClock(T0)
    left, right = runtime(store, clock=clock), runtime(store, clock=clock)
    assert left.cron_loop is not None and right.cron_loop is not None
    total = 0
    for minutes in range(3, 63, 5):
        clock.set(T0 + timedelta(minutes=minutes))
        both = await asyncio.gather(
            left.cron_loop.tick_once(clock.now()), right.cron_loop.tick_once(clock.now())
        )
        total += sum(len(created) for created in both)
    assert total == 12
    assert len((await left.list_runs()).unwrap()) == 12


async def test_steps_see_the_schedule_and_replays_keep_it() -> None:
    SEEN.clear()
    clock = FakeClock(T0)
    rt = runtime(clock=clock)
    async with rt:  # the background cron loop runs (it polls every second at most)
        clock.set(T0 + timedelta(minutes=3))
        for _ in range(100):
            runs = (await rt.list_runs()).unwrap()
            if runs:
                break
            await asyncio.sleep(0.05)
        (started,) = runs
        run_id = started.id
        done = (await rt.wait_for(run_id, timeout=timedelta(seconds=5))).unwrap()
        replay = (await rt.replay_run(run_id)).unwrap()
        replayed = (await rt.wait_for(replay.id, timeout=timedelta(seconds=5))).unwrap()
        manual_run = (await rt.start_run(MANUAL_ONLY, {})).unwrap()
        manual_done = (await rt.wait_for(manual_run.id, timeout=timedelta(seconds=5))).unwrap()
    assert done.status is RunStatus.COMPLETED
    assert done.context["tick"] == "2026-06-01T12:05:00Z"
    assert replayed.context["schedule"] == done.context["schedule"]
    assert SEEN[0] == SEEN[1] == done.context["schedule"]
    assert manual_done.context["tick"] is None


def test_activation_is_checked() -> None:
    def make(names: list[str]) -> Runtime:
        return Runtime(store=MemoryRunStore(), workflows=[NEEDS_PAYLOAD, MANUAL_ONLY], cron=names)

    with pytest.raises(ConfigurationError, match=r"'cron\.unknown' is not registered"):
        make(["cron.unknown"])
    with pytest.raises(ConfigurationError, match=r"'cron\.manual_only' has no cron trigger"):
        make(["cron.manual_only"])
    with pytest.raises(
        ConfigurationError, match=r"cron trigger 'nightly' of 'cron\.needs_payload'"
    ):
        make(["cron.needs_payload"])
    assert Runtime(store=MemoryRunStore(), workflows=[NEEDS_PAYLOAD]).cron_loop is None


async def test_an_unlisted_workflow_is_never_started_by_cron() -> None:
    clock = FakeClock(T0)
    rt = Runtime(store=MemoryRunStore(), workflows=[EVERY_FIVE], clock=clock)
    async with rt:
        clock.set(T0 + timedelta(hours=2))
        await asyncio.sleep(0.2)
    assert rt.cron_loop is None
    assert (await rt.list_runs()).unwrap() == ()
