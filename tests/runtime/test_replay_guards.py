"""Replay guards (irreversible, not compensatable) and replays from a step."""

from __future__ import annotations

from squidmesh_backends import TimeSkippingRuntime
from squidmesh_core import (
    COMPLETE,
    InvalidOption,
    RunStatus,
    StepContext,
    UnknownStep,
    chain,
    manual,
    step,
    workflow,
)
from squidmesh_core.errors import UnsafeReplay

ran: list[str] = []


async def load(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    ran.append("load")
    return {"invoice": 7}


async def charge(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    ran.append("charge")
    return {"charged": data["invoice"]}


broken = {"yes": True}


async def notify(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    ran.append("notify")
    if broken["yes"]:
        raise RuntimeError("template missing")
    return {"told": data["charged"]}


FLOW = workflow(
    "guards.billing",
    triggers=[manual()],
    steps=[step("load", load), step("charge", charge, irreversible=True), step("notify", notify)],
    transitions=chain("load", "charge", "notify", COMPLETE),
)


async def failed_run(rt: TimeSkippingRuntime) -> str:
    broken["yes"] = True
    run = (await rt.start_run(FLOW, {})).unwrap()
    done = await rt.run_until_complete(run.id)
    assert done.status is RunStatus.FAILED
    return run.id


async def test_a_replay_that_would_charge_again_is_refused_unless_allowed_exactly() -> None:
    rt = TimeSkippingRuntime(workflows=[FLOW])
    source = await failed_run(rt)
    refused = (await rt.replay_run(source)).failure()
    assert refused == UnsafeReplay(run_id=source, steps=("charge",))
    assert "allow_irreversible=True" in refused.describe()
    truthy = (await rt.replay_run(source, allow_irreversible="yes")).failure()
    assert isinstance(truthy, UnsafeReplay)  # only the exact value True counts
    explained = (await rt.explain_run(source)).unwrap()
    assert explained.details["replay"] == {
        "allowed": False,
        "required_override": "allow_irreversible",
        "blocked_by": ["charge"],
    }
    assert explained.next_actions[0].command is not None
    assert explained.next_actions[0].command.endswith("--allow-irreversible")
    allowed = (await rt.replay_run(source, allow_irreversible=True, actor="ops")).unwrap()
    assert allowed.receipt is not None
    assert allowed.receipt.entry.outcome["allow_irreversible"] is True


async def test_a_replay_from_a_step_reuses_the_outputs_before_it() -> None:
    rt = TimeSkippingRuntime(workflows=[FLOW])
    source = await failed_run(rt)
    ran.clear()
    broken["yes"] = False  # the bug is fixed: resume where it broke
    again = (await rt.replay_run(source, from_step="notify", actor="dev")).unwrap()
    done = await rt.run_until_complete(again.id)
    assert done.status is RunStatus.COMPLETED
    assert ran == ["notify"]  # neither load nor charge ran again
    assert done.context == {"invoice": 7, "charged": 7, "told": 7}
    assert again.receipt is not None
    assert again.receipt.entry.outcome["reused"] == ["load", "charge"]
    assert done.history is not None
    assert [(s.step, len(s.attempts)) for s in done.history] == [
        ("load", 0),
        ("charge", 0),
        ("notify", 1),
    ]


async def test_a_replay_from_a_guarded_step_is_guarded_too() -> None:
    rt = TimeSkippingRuntime(workflows=[FLOW])
    source = await failed_run(rt)
    refused = (await rt.replay_run(source, from_step="charge")).failure()
    assert refused == UnsafeReplay(run_id=source, steps=("charge",))
    unknown = (await rt.replay_run(source, from_step="ghost")).failure()
    assert unknown == UnknownStep(workflow="guards.billing", step="ghost")


async def test_a_replay_from_a_step_that_never_ran_is_refused() -> None:
    rt = TimeSkippingRuntime(workflows=[FLOW])
    run = (await rt.start_run(FLOW, {})).unwrap()
    refused = (await rt.replay_run(run.id, from_step="notify")).failure()
    assert isinstance(refused, InvalidOption) and "never ran" in refused.reason
