"""Cron triggers on the runtime, with a fake clock: ticks, catch-up, metadata, activation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated

import pytest
from pydantic import BaseModel, field_validator

from squidmesh_backends.errors import ConfigurationError
from squidmesh_backends.memory import MemoryRunStore
from squidmesh_backends.runtime import FakeClock, Runtime, RuntimeSettings
from squidmesh_core import (
    COMPLETE,
    InvalidWorkflowError,
    RunStatus,
    StepContext,
    Today,
    chain,
    cron,
    manual,
    step,
    workflow,
)
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
    loop = rt.worker.cron_loop
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
    assert rt.worker.cron_loop is not None
    clock.set(T0 + timedelta(minutes=3))
    await rt.worker.cron_loop.tick_once(clock.now())  # 12:05 started
    clock.set(T0 + timedelta(hours=1, minutes=1))  # 13:03: 12:10 .. 13:00 were missed
    (newest,) = await rt.worker.cron_loop.tick_once(clock.now())
    run = (await rt.inspect_run(newest)).unwrap()
    assert schedule_of(run)["tick"] == "2026-06-01T13:00:00Z"
    (skipped,) = [e for e in events.seen if e.topic is Topic.CRON_TICKS_SKIPPED]
    assert skipped.attributes["skipped"] == 10
    assert skipped.run_id == newest


async def test_a_misfire_window_catches_up_the_ticks_inside_it() -> None:
    clock = FakeClock(T0)
    rt = runtime(clock=clock, window=timedelta(minutes=12))
    assert rt.worker.cron_loop is not None
    clock.set(T0 + timedelta(minutes=3))
    await rt.worker.cron_loop.tick_once(clock.now())
    clock.set(T0 + timedelta(hours=1, minutes=1))
    started = await rt.worker.cron_loop.tick_once(clock.now())
    ticks = [schedule_of((await rt.inspect_run(r)).unwrap())["tick"] for r in started]
    assert ticks == ["2026-06-01T12:55:00Z", "2026-06-01T13:00:00Z"]


async def test_a_second_loop_over_the_same_store_never_duplicates_a_tick() -> None:
    store, clock = MemoryRunStore(), FakeClock(T0)
    left, right = runtime(store, clock=clock), runtime(store, clock=clock)
    assert left.worker.cron_loop is not None and right.worker.cron_loop is not None
    total = 0
    for minutes in range(3, 63, 5):
        clock.set(T0 + timedelta(minutes=minutes))
        both = await asyncio.gather(
            left.worker.cron_loop.tick_once(clock.now()),
            right.worker.cron_loop.tick_once(clock.now()),
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
    assert Runtime(store=MemoryRunStore(), workflows=[NEEDS_PAYLOAD]).worker.cron_loop is None


async def test_an_unlisted_workflow_is_never_started_by_cron() -> None:
    clock = FakeClock(T0)
    rt = Runtime(store=MemoryRunStore(), workflows=[EVERY_FIVE], clock=clock)
    async with rt:
        clock.set(T0 + timedelta(hours=2))
        await asyncio.sleep(0.2)
    assert rt.worker.cron_loop is None
    assert (await rt.list_runs()).unwrap() == ()


async def test_callers_cannot_use_cron_keys() -> None:
    rt = runtime()
    refused = (await rt.start_run(MANUAL_ONLY, {}, idempotency_key="cron:five:2099")).failure()
    assert refused.code == "invalid_option"
    assert "belong to cron triggers" in str(getattr(refused, "reason", ""))


def test_the_schedule_key_is_reserved_in_definitions() -> None:
    class Clashing(BaseModel):
        schedule: str = "x"

    with pytest.raises(InvalidWorkflowError, match="payload field 'schedule' is reserved"):
        workflow(
            "cron.clash", triggers=[manual(payload=Clashing)], steps=[step("r", report)],
            transitions=chain("r", COMPLETE),
        )  # fmt: skip
    with pytest.raises(InvalidWorkflowError, match="writes its output to 'schedule'"):
        workflow(
            "cron.clash", triggers=[manual()], steps=[step("r", report, output="schedule")],
            transitions=chain("r", COMPLETE),
        )  # fmt: skip


async def overwrite(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    return {"schedule": "mine"}


async def test_a_step_output_cannot_overwrite_the_schedule() -> None:
    flow = workflow(
        "cron.overwrite", triggers=[manual()], steps=[step("o", overwrite)],
        transitions=chain("o", COMPLETE),
    )  # fmt: skip
    async with Runtime(store=MemoryRunStore(), workflows=[flow]) as rt:
        run = (await rt.start_run(flow, {})).unwrap()
        done = (await rt.wait_for(run.id, timeout=timedelta(seconds=5))).unwrap()
    assert done.status is RunStatus.FAILED
    assert done.history is not None
    error = done.history[0].attempts[0].error
    assert error is not None and error.kind == "invalid_output"
    assert "reserved key 'schedule'" in error.message


class Dated(BaseModel):
    day: Annotated[str, Today()]


DATED = workflow(
    "cron.dated",
    triggers=[cron("midnight", "0 0 * * *", payload=Dated)],
    steps=[step("report", report)],
    transitions=chain("report", COMPLETE),
)


async def test_defaults_resolve_at_the_tick_not_when_the_loop_runs() -> None:
    clock = FakeClock(datetime(2026, 6, 1, 23, 0, tzinfo=UTC))
    rt = Runtime(store=MemoryRunStore(), workflows=[DATED], clock=clock, cron=[DATED])
    assert rt.worker.cron_loop is not None
    clock.set(datetime(2026, 6, 3, 0, 30, tzinfo=UTC))  # two ticks missed; the loop runs late
    (newest,) = await rt.worker.cron_loop.tick_once(clock.now())
    assert (await rt.inspect_run(newest)).unwrap().payload == {"day": "2026-06-03"}
    clock.set(datetime(2026, 6, 4, 23, 59, tzinfo=UTC))
    (late,) = await rt.worker.cron_loop.tick_once(clock.now())
    assert (await rt.inspect_run(late)).unwrap().payload == {"day": "2026-06-04"}


def test_the_misfire_window_must_be_positive() -> None:
    with pytest.raises(ConfigurationError, match="cron_misfire_window must be positive"):
        RuntimeSettings(cron_misfire_window=timedelta(0))


class NotOnTheThird(BaseModel):
    day: Annotated[str, Today()]

    @field_validator("day")
    @classmethod
    def _not_the_third(cls, value: str) -> str:
        if value == "2026-06-03":
            raise ValueError("no runs on the third")
        return value


PICKY = workflow(
    "cron.picky",
    triggers=[cron("midnight", "0 0 * * *", payload=NotOnTheThird)],
    steps=[step("report", report)],
    transitions=chain("report", COMPLETE),
)


async def test_a_tick_whose_payload_does_not_resolve_is_reported_not_started(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(datetime(2026, 6, 1, 23, 0, tzinfo=UTC))
    rt = Runtime(
        store=MemoryRunStore(),
        workflows=[PICKY],
        clock=clock,
        settings=RuntimeSettings(cron_misfire_window=timedelta(days=3)),
        cron=[PICKY],
    )
    assert rt.worker.cron_loop is not None
    clock.set(datetime(2026, 6, 4, 0, 30, tzinfo=UTC))  # ticks of the 2nd, 3rd and 4th are due
    with caplog.at_level(logging.ERROR, logger="squidmesh.cron"):
        started = await rt.worker.cron_loop.tick_once(clock.now())
    runs = [(await rt.inspect_run(run_id)).unwrap() for run_id in started]
    assert [(schedule_of(r)["tick"], r.payload["day"]) for r in runs] == [
        ("2026-06-02T00:00:00Z", "2026-06-02"),
        ("2026-06-04T00:00:00Z", "2026-06-04"),
    ]
    (record,) = [r for r in caplog.records if "could not resolve the payload" in r.getMessage()]
    assert "cron.picky/midnight" in record.getMessage()
    assert "2026-06-03T00:00:00Z" in record.getMessage()
    assert "no runs on the third" in record.getMessage()
