from __future__ import annotations

from datetime import timedelta

import pytest
from returns.result import Failure, Success

from squidmesh_backends.runtime import Client, TimeSkippingRuntime
from squidmesh_core import (
    AttemptStatus,
    InvalidOption,
    InvalidPayload,
    InvalidRunId,
    InvalidTransition,
    NotFound,
    RunStatus,
    StepStatus,
    UnknownTrigger,
    UnknownWorkflow,
    WorkflowDefinition,
    chain,
    manual,
    step,
    workflow,
)
from tests.runtime.workflows import Calls, order_flow


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def flow(calls: Calls) -> WorkflowDefinition:
    return order_flow(calls)  # type: ignore[return-value]


@pytest.fixture
def rt(flow: WorkflowDefinition) -> TimeSkippingRuntime:
    return TimeSkippingRuntime(workflows=[flow])


class TestStartRun:
    async def test_starts_a_pending_run_with_the_resolved_payload(
        self, rt: TimeSkippingRuntime
    ) -> None:
        run = (await rt.start_run("shop.order", {"order_id": "o1"})).unwrap()
        assert run.status is RunStatus.PENDING
        assert run.payload == {"order_id": "o1", "amount": 100}
        assert run.trigger == "order"
        assert run.current_steps == ("reserve",)
        assert run.history is None
        assert not run.existing

    async def test_accepts_the_definition_itself(
        self, rt: TimeSkippingRuntime, flow: WorkflowDefinition
    ) -> None:
        assert isinstance(await rt.start_run(flow, {"order_id": "o1"}), Success)

    async def test_unknown_workflow(self, rt: TimeSkippingRuntime) -> None:
        assert await rt.start_run("nope", {}) == Failure(UnknownWorkflow(workflow="nope"))

    async def test_an_unregistered_definition_with_a_registered_name_is_unknown(
        self, rt: TimeSkippingRuntime, calls: Calls
    ) -> None:
        impostor = order_flow(calls)
        assert await rt.start_run(impostor, {"order_id": "o"}) == Failure(  # type: ignore[arg-type]
            UnknownWorkflow(workflow="shop.order")
        )

    async def test_unknown_trigger(self, rt: TimeSkippingRuntime) -> None:
        assert await rt.start_run("shop.order", {}, trigger="cron") == Failure(
            UnknownTrigger(workflow="shop.order", trigger="cron")
        )

    async def test_invalid_payload_stores_nothing(self, rt: TimeSkippingRuntime) -> None:
        result = await rt.start_run("shop.order", {"amount": "x", "extra": 1})
        assert isinstance(result, Failure)
        problem = result.failure()
        assert isinstance(problem, InvalidPayload)
        assert problem.missing == ("order_id",)
        assert problem.unknown == ("extra",)
        assert (await rt.list_runs()).unwrap() == ()
        assert await rt.store.next_due_at() is None

    @pytest.mark.parametrize(
        "payload",
        [{"order_id": "a\x00b"}, {"order_id": "x" * (2 * 1024 * 1024)}, ["list"], "text", None],
    )
    async def test_unstorable_payloads_are_refused_before_writing(
        self, rt: TimeSkippingRuntime, payload: object
    ) -> None:
        result = await rt.start_run("shop.order", payload)
        assert isinstance(result, Failure)
        assert isinstance(result.failure(), InvalidPayload)
        assert (await rt.list_runs()).unwrap() == ()

    async def test_idempotency_key_returns_the_existing_run(self, rt: TimeSkippingRuntime) -> None:
        first = (
            await rt.start_run("shop.order", {"order_id": "o1"}, idempotency_key="k1")
        ).unwrap()
        again = (
            await rt.start_run("shop.order", {"order_id": "o2"}, idempotency_key="k1")
        ).unwrap()
        assert again.id == first.id
        assert again.existing
        assert again.payload == first.payload
        assert len((await rt.list_runs()).unwrap()) == 1


class TestInspectAndList:
    async def test_inspect_with_history(self, rt: TimeSkippingRuntime, calls: Calls) -> None:
        calls.fail_first["charge"] = 1
        run = (await rt.start_run("shop.order", {"order_id": "o1"})).unwrap()
        await rt.run_until_complete(run.id)
        seen = (await rt.inspect_run(run.id, include_history=True)).unwrap()
        assert seen.history is not None
        assert [s.step for s in seen.history] == ["reserve", "cool_off", "note", "charge", "ship"]
        charge = seen.history[3]
        assert [a.status for a in charge.attempts] == [
            AttemptStatus.FAILED,
            AttemptStatus.SUCCEEDED,
        ]
        assert charge.attempts[0].error is not None
        assert charge.attempts[0].error.message == "gateway busy (1)"
        assert charge.input is not None and charge.input["amount"] == 100
        assert charge.output == {"charged": 100}
        assert all(a.finished_at is not None for s in seen.history for a in s.attempts)

    async def test_inspect_without_history(self, rt: TimeSkippingRuntime) -> None:
        run = (await rt.start_run("shop.order", {"order_id": "o1"})).unwrap()
        assert (await rt.inspect_run(run.id)).unwrap() == run

    @pytest.mark.parametrize("bad", ["nope", "", "00000000-0000-4000-8000-00000000000Z", "../etc"])
    async def test_malformed_run_ids(self, rt: TimeSkippingRuntime, bad: str) -> None:
        assert isinstance((await rt.inspect_run(bad)).failure(), InvalidRunId)
        assert isinstance((await rt.cancel_run(bad)).failure(), InvalidRunId)
        assert isinstance((await rt.replay_run(bad)).failure(), InvalidRunId)

    async def test_unknown_runs(self, rt: TimeSkippingRuntime) -> None:
        ghost = "00000000-0000-4000-8000-999999999999"
        assert await rt.inspect_run(ghost) == Failure(NotFound(run_id=ghost))
        assert await rt.cancel_run(ghost) == Failure(NotFound(run_id=ghost))
        assert await rt.replay_run(ghost) == Failure(NotFound(run_id=ghost))

    async def test_list_newest_first_with_filters(self, rt: TimeSkippingRuntime) -> None:
        ids = []
        for n in range(3):
            ids.append((await rt.start_run("shop.order", {"order_id": f"o{n}"})).unwrap().id)
            rt.fake_clock.advance(timedelta(seconds=1))
        await rt.cancel_run(ids[1])
        assert [r.id for r in (await rt.list_runs()).unwrap()] == ids[::-1]
        assert [r.id for r in (await rt.list_runs(status="cancelled")).unwrap()] == [ids[1]]
        assert [r.id for r in (await rt.list_runs(status=RunStatus.PENDING, limit=1)).unwrap()] == [
            ids[2]
        ]
        assert (await rt.list_runs(workflow="other")).unwrap() == ()

    @pytest.mark.parametrize(
        ("kwargs", "option"),
        [
            ({"limit": 0}, "limit"),
            ({"limit": 5000}, "limit"),
            ({"limit": True}, "limit"),
            ({"status": "sleeping"}, "status"),
        ],
    )
    async def test_list_rejects_bad_options(
        self, rt: TimeSkippingRuntime, kwargs: dict[str, object], option: str
    ) -> None:
        result = await rt.list_runs(**kwargs)  # type: ignore[arg-type]
        assert isinstance(result, Failure)
        assert isinstance(result.failure(), InvalidOption)
        assert result.failure().option == option


class TestRunning:
    async def test_wait_and_retries_complete_instantly(
        self, rt: TimeSkippingRuntime, calls: Calls
    ) -> None:
        calls.fail_first["charge"] = 3
        run = (await rt.start_run("shop.order", {"order_id": "o1"})).unwrap()
        done = await rt.run_until_complete(run.id)
        assert done.status is RunStatus.COMPLETED
        assert rt.now - done.created_at == timedelta(hours=6, seconds=10 + 20 + 40)
        assert done.context["reservation"] == {"reserved": "o1"}

    async def test_exhausted_retries_follow_the_error_route(
        self, rt: TimeSkippingRuntime, calls: Calls
    ) -> None:
        calls.fail_first["charge"] = 99
        run = (await rt.start_run("shop.order", {"order_id": "o1"})).unwrap()
        done = await rt.run_until_complete(run.id)
        assert done.status is RunStatus.COMPLETED
        assert done.context.get("refunded") is True
        assert done.history is not None
        charge = next(s for s in done.history if s.step == "charge")
        assert charge.status is StepStatus.FAILED and len(charge.attempts) == 4

    async def test_step_context_carries_a_stable_idempotency_key(
        self, rt: TimeSkippingRuntime, calls: Calls
    ) -> None:
        calls.fail_first["charge"] = 2
        run = (await rt.start_run("shop.order", {"order_id": "o1"})).unwrap()
        await rt.run_until_complete(run.id)
        charges = [c for c in calls.contexts if c.step == "charge"]
        assert [c.attempt for c in charges] == [1, 2, 3]
        assert len({c.idempotency_key for c in charges}) == 1
        assert charges[0].run_id == run.id and charges[0].workflow == "shop.order"

    async def test_advance_runs_only_what_falls_due(self, rt: TimeSkippingRuntime) -> None:
        run = (await rt.start_run("shop.order", {"order_id": "o1"})).unwrap()
        await rt.advance(timedelta(hours=1))
        mid = (await rt.inspect_run(run.id)).unwrap()
        assert mid.status is RunStatus.RUNNING
        assert mid.current_steps == ("note",)
        await rt.advance(timedelta(hours=5))
        assert (await rt.inspect_run(run.id)).unwrap().status is RunStatus.COMPLETED


class TestCancel:
    async def test_pending_run_is_cancelled_at_once(self, rt: TimeSkippingRuntime) -> None:
        run = (await rt.start_run("shop.order", {"order_id": "o1"})).unwrap()
        cancelled = (await rt.cancel_run(run.id)).unwrap()
        assert cancelled.status is RunStatus.CANCELLED
        assert await rt.store.next_due_at() is None

    async def test_waiting_run_converges_without_waiting(self, rt: TimeSkippingRuntime) -> None:
        run = (await rt.start_run("shop.order", {"order_id": "o1"})).unwrap()
        await rt.advance(timedelta(minutes=1))
        assert (await rt.cancel_run(run.id)).unwrap().status is RunStatus.CANCELLING
        await rt.run_due()
        done = (await rt.inspect_run(run.id)).unwrap()
        assert done.status is RunStatus.CANCELLED
        assert rt.now - done.created_at == timedelta(minutes=1)

    async def test_retrying_run_can_be_cancelled(
        self, rt: TimeSkippingRuntime, calls: Calls
    ) -> None:
        calls.fail_first["charge"] = 99
        run = (await rt.start_run("shop.order", {"order_id": "o1"})).unwrap()
        await rt.advance(timedelta(hours=6))
        assert (await rt.inspect_run(run.id)).unwrap().status is RunStatus.RETRYING
        assert (await rt.cancel_run(run.id)).unwrap().status is RunStatus.CANCELLING
        done = await rt.run_until_complete(run.id)
        assert done.status is RunStatus.CANCELLED

    @pytest.mark.parametrize("ending", ["completed", "cancelled", "cancelling"])
    async def test_finished_or_cancelling_runs_refuse(
        self, rt: TimeSkippingRuntime, ending: str
    ) -> None:
        run = (await rt.start_run("shop.order", {"order_id": "o1"})).unwrap()
        if ending == "completed":
            await rt.run_until_complete(run.id)
        elif ending == "cancelled":
            await rt.cancel_run(run.id)
        else:
            await rt.advance(timedelta(minutes=1))
            await rt.cancel_run(run.id)
        assert await rt.cancel_run(run.id) == Failure(
            InvalidTransition(run_id=run.id, from_status=ending, to_status="cancelling")
        )

    async def test_run_of_an_unregistered_workflow(
        self, rt: TimeSkippingRuntime, flow: WorkflowDefinition
    ) -> None:
        run = (await rt.start_run("shop.order", {"order_id": "o1"})).unwrap()
        other = Client(store=rt.memory, workflows=[])
        assert await other.cancel_run(run.id) == Failure(UnknownWorkflow(workflow="shop.order"))


class TestReplay:
    async def test_replay_starts_a_new_run_with_lineage(self, rt: TimeSkippingRuntime) -> None:
        run = (await rt.start_run("shop.order", {"order_id": "o1"})).unwrap()
        source = await rt.run_until_complete(run.id)
        replay = (await rt.replay_run(run.id)).unwrap()
        assert replay.id != run.id
        assert replay.replayed_from == run.id
        assert replay.payload == source.payload
        assert replay.status is RunStatus.PENDING
        assert (await rt.inspect_run(run.id, include_history=True)).unwrap() == source
        assert (await rt.run_until_complete(replay.id)).status is RunStatus.COMPLETED

    async def test_replay_of_an_active_run_leaves_it_alone(self, rt: TimeSkippingRuntime) -> None:
        run = (await rt.start_run("shop.order", {"order_id": "o1"})).unwrap()
        replay = (await rt.replay_run(run.id)).unwrap()
        assert (await rt.inspect_run(run.id)).unwrap() == run
        assert replay.replayed_from == run.id


async def test_two_runtimes_in_one_process_are_independent() -> None:
    def one(data: object, ctx: object) -> dict[str, int]:
        return {"n": 1}

    wf = workflow(
        "w", triggers=[manual()], steps=[step("a", one)], transitions=chain("a", "complete")
    )
    left, right = TimeSkippingRuntime(workflows=[wf]), TimeSkippingRuntime(workflows=[wf])
    run = (await left.start_run("w", {})).unwrap()
    assert isinstance(await right.inspect_run(run.id), Failure)
