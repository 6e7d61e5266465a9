"""decide: cancels, replays, dependency workflows, hostile input and redeploys."""

from __future__ import annotations

from datetime import timedelta

import pytest
from returns.result import Failure

from squidmesh_core import (
    COMPLETE,
    Fixed,
    InvalidTransition,
    Retry,
    RunId,
    RunStatus,
    StepFailure,
    StepStatus,
    UnknownTrigger,
    WorkflowDefinition,
    chain,
    manual,
    step,
    wait,
    workflow,
)
from squidmesh_core.protocol import (
    CancelJob,
    CancelRequested,
    JobDelivered,
    LeaseToken,
    ReplayRequested,
    RescheduleJob,
    RunRequested,
    ScheduleJob,
    Topic,
    decide,
)
from tests.unit.decide_flows import Charge, S, linear, new
from tests.unit.helpers import OTHER_RUN, RUN, T0, Driver, handler


class TestCancel:
    def test_pending_run_is_cancelled_at_once(self) -> None:
        d = new()
        job = d.job()
        d.accept(CancelRequested())
        assert d.status() is RunStatus.CANCELLED
        assert d.state.jobs == ()
        assert CancelJob(job_id=job) in d.decision.commands
        load = d.state.step_run("load")
        assert load is not None and load.status is StepStatus.CANCELLED

    def test_running_run_becomes_cancelling_then_cancelled_when_the_attempt_ends(self) -> None:
        d = new()
        d.deliver("load")
        d.accept(CancelRequested())
        assert d.status() is RunStatus.CANCELLING
        d.succeed("load", {"total": 1})
        assert d.status() is RunStatus.CANCELLED
        assert d.state.context == {"invoice": {"total": 1}}
        assert d.state.jobs == ()

    def test_cancel_while_waiting_makes_the_timer_due_now(self) -> None:
        d = new()
        d.run_step("load")
        d.run_step("settle")
        job = d.job("note")
        d.advance(S)
        d.accept(CancelRequested())
        assert RescheduleJob(job_id=job, due_at=d.now) in d.decision.commands
        assert d.scheduled() == [("note", 1, d.now)]
        d.accept(JobDelivered(job_id=job, lease_token=LeaseToken("z")))
        assert d.status() is RunStatus.CANCELLED
        note = d.state.step_run("note")
        assert note is not None and note.status is StepStatus.CANCELLED and note.attempts == ()

    def test_retrying_run_converges_on_the_retry_delivery(self) -> None:
        d = new(retry=Retry(max_attempts=3, backoff=Fixed(delay=S * 60)))
        for name in ("load", "settle", "note"):
            d.run_step(name)
        d.deliver("charge")
        d.fail("charge")
        d.accept(CancelRequested())
        assert d.status() is RunStatus.CANCELLING
        d.deliver("charge")
        assert d.status() is RunStatus.CANCELLED

    def test_failure_while_cancelling_cancels(self) -> None:
        d = new(retry=Retry(max_attempts=3))
        d.deliver("load")
        d.accept(CancelRequested())
        d.fail("load")
        assert d.status() is RunStatus.CANCELLED

    def test_lost_worker_while_cancelling_cancels(self) -> None:
        d = new(retry=Retry(max_attempts=3))
        d.deliver("load")
        d.accept(CancelRequested())
        d.expire("load")
        assert d.status() is RunStatus.CANCELLED

    @pytest.mark.parametrize("status", ["cancelling", "cancelled", "completed", "failed"])
    def test_cancel_is_refused_when_cancelling_or_finished(self, status: str) -> None:
        d = new()
        d.deliver("load")
        if status == "cancelling":
            d.accept(CancelRequested())
        elif status == "cancelled":
            d.accept(CancelRequested())
            d.succeed("load")
        elif status == "completed":
            d.succeed("load")
            for name in ("settle", "note", "charge"):
                d.run_step(name)
        else:
            d.fail("load")
        assert d.status().value == status
        assert d.reject(CancelRequested()) == InvalidTransition(
            run_id=RUN, from_status=status, to_status="cancelling"
        )


class TestReplay:
    def test_replay_creates_a_new_run_from_the_stored_payload(self) -> None:
        d = Driver(
            linear(),
            {"account_id": "acc-1"},
            context={"schedule": {"id": "s1"}},
        )
        for name in ("load", "settle", "note", "charge"):
            d.run_step(name, {"k": name})
        source = d.state
        result = decide(d.definition, source, ReplayRequested(new_run_id=OTHER_RUN), now=T0 + S)
        replay = result.unwrap()
        assert replay.state.id == OTHER_RUN
        assert replay.state.replayed_from == RUN
        assert replay.state.status is RunStatus.PENDING
        assert replay.state.payload == source.payload
        assert replay.state.context == {"schedule": {"id": "s1"}}
        assert replay.state.version == 1
        assert [c.topic for c in replay.emitted] == [Topic.RUN_REPLAYED, Topic.COMMAND_ACCEPTED]
        assert replay.emitted[0].attributes == {"trigger": "charge", "replayed_from": RUN}
        assert [j.step for j in replay.jobs_scheduled] == ["load"]

    def test_replay_of_a_run_whose_trigger_was_removed(self) -> None:
        d = new()
        renamed = workflow(
            "billing.charge",
            triggers=[manual("other", payload=Charge)],
            steps=[step("load", handler)],
            transitions=chain("load", COMPLETE),
        )
        result = decide(renamed, d.state, ReplayRequested(new_run_id=OTHER_RUN), now=T0)
        assert result == Failure(UnknownTrigger(workflow="billing.charge", trigger="charge"))


class TestDependencies:
    def fan(self, retry: Retry | None = None) -> Driver:
        wf = workflow(
            "w.fan",
            triggers=[manual()],
            steps=[
                step("account", handler),
                step("invoice", handler, retry=retry),
                wait("breathe", timedelta(minutes=5), after=["account"]),
                step("notify", handler, after=["breathe", "invoice"]),
            ],
        )
        return Driver(wf)

    def test_roots_start_together(self) -> None:
        d = self.fan()
        assert d.scheduled() == [("account", 1, T0), ("invoice", 1, T0)]

    def test_fan_in_waits_for_every_dependency(self) -> None:
        d = self.fan()
        d.run_step("account", {"a": 1})
        assert d.scheduled() == [("breathe", 1, T0), ("invoice", 1, T0)]
        d.run_step("breathe")
        assert d.scheduled() == [("invoice", 1, T0)]
        d.run_step("invoice", {"i": 2})
        assert d.scheduled() == [("notify", 1, T0 + timedelta(minutes=5))]
        d.deliver("notify")
        notify = d.state.step_run("notify")
        assert notify is not None and notify.input == {"a": 1, "i": 2}
        d.succeed("notify")
        assert d.status() is RunStatus.COMPLETED

    def test_root_input_ignores_sibling_output(self) -> None:
        d = self.fan()
        d.run_step("account", {"a": 1})
        d.deliver("invoice")
        invoice = d.state.step_run("invoice")
        assert invoice is not None and invoice.input == {}

    def test_failure_cancels_scheduled_siblings_and_records_stragglers(self) -> None:
        d = self.fan()
        d.deliver("account")
        d.deliver("invoice")
        d.fail("invoice")
        assert d.status() is RunStatus.FAILED
        account = d.state.step_run("account")
        assert account is not None and account.status is StepStatus.RUNNING
        d.succeed("account", {"late": True})
        assert d.status() is RunStatus.FAILED
        account = d.state.step_run("account")
        assert account is not None and account.status is StepStatus.COMPLETED
        assert "late" not in d.state.context
        assert not any(isinstance(c, ScheduleJob) for c in d.decision.commands)

    def test_straggler_failure_after_the_run_ended_is_recorded(self) -> None:
        d = self.fan()
        d.deliver("account")
        d.deliver("invoice")
        d.fail("invoice")
        d.fail("account")
        account = d.state.step_run("account")
        assert account is not None and account.status is StepStatus.FAILED
        assert d.state.jobs == ()

    def test_retrying_sibling_keeps_the_run_retrying(self) -> None:
        d = self.fan(retry=Retry(max_attempts=2))
        d.deliver("invoice")
        d.fail("invoice")
        assert d.status() is RunStatus.RETRYING
        d.run_step("account")
        assert d.status() is RunStatus.RETRYING
        d.deliver("invoice")
        assert d.status() is RunStatus.RUNNING

    def test_cancel_with_several_attempts_in_flight(self) -> None:
        d = self.fan()
        d.deliver("account")
        d.deliver("invoice")
        d.accept(CancelRequested())
        d.succeed("account")
        assert d.status() is RunStatus.CANCELLED
        d.succeed("invoice")
        assert d.status() is RunStatus.CANCELLED
        assert d.state.jobs == ()


def test_every_decision_bumps_the_version_and_the_update_time() -> None:
    d = new()
    d.advance(S)
    d.deliver()
    assert d.state.version == 2
    assert d.state.updated_at == T0 + S
    assert d.state.created_at == T0


def test_decide_is_deterministic() -> None:
    first, second = new(), new()
    first.deliver()
    second.deliver()
    assert first.state == second.state
    assert first.decision == second.decision


def test_run_ids_are_never_invented() -> None:
    d = new()
    assert {j.run_id for j in d.state.jobs} == {RunId(RUN)}


class TestHostileInput:
    def test_unstorable_failure_fields_are_cleaned_not_stored(self) -> None:
        d = new(retry=Retry(max_attempts=2))
        for name in ("load", "settle", "note"):
            d.run_step(name)
        d.deliver("charge")
        d.fail(
            "charge",
            StepFailure(
                kind="bad\x00kind",
                message="nul\x00 and \ud800 surrogate",
                retry_after=timedelta(days=10**6),
                details={"x": float("nan")},
            ),
        )
        from squidmesh_core.codec import encode_run
        from squidmesh_core.jsonvalue import check_json

        error_ = d.state.last_error
        assert error_ is not None
        assert error_.message == "nul\\x00 and \\ud800 surrogate"
        assert error_.kind == "bad\\x00kind"
        assert error_.retry_after == timedelta(days=366)
        assert error_.details == {"unstorable_details": "$.x is not a finite number"}
        assert isinstance(check_json(encode_run(d.state)), type(check_json({})))
        assert ("charge", 2, d.now + timedelta(days=366)) in d.scheduled()

    def test_huge_integer_output_is_an_invalid_output(self) -> None:
        d = new()
        d.deliver("load")
        d.succeed("load", {"n": 10**5000})
        assert d.status() is RunStatus.FAILED
        assert d.state.last_error is not None and "too large" in d.state.last_error.message

    def test_malformed_run_ids_are_refused(self) -> None:
        from squidmesh_core import InvalidRunId

        result = decide(
            linear(),
            None,
            RunRequested(run_id=RunId("x/../y"), payload={"account_id": "a"}),
            now=T0,
        )
        assert result == Failure(InvalidRunId(value="x/../y"))
        replay = decide(linear(), new().state, ReplayRequested(new_run_id=RunId("nope")), now=T0)
        assert replay == Failure(InvalidRunId(value="nope"))

    def test_unstorable_initial_context_is_refused(self) -> None:
        result = decide(
            linear(),
            None,
            RunRequested(run_id=RUN, payload={"account_id": "a"}, context={"x": float("inf")}),
            now=T0,
        )
        assert isinstance(result, Failure)
        assert result.failure().reason == "initial context.x is not a finite number"


class TestRedeploy:
    """Runs outlive deployments: a definition may lose a step while a run still needs it."""

    def renamed(self) -> WorkflowDefinition:
        return workflow(
            "billing.charge",
            triggers=[manual("charge", payload=Charge)],
            steps=[step("load_v2", handler)],
            transitions=chain("load_v2", COMPLETE),
        )

    def test_delivery_of_a_removed_step_fails_the_run_clearly(self) -> None:
        d = new()
        d.definition = self.renamed()
        d.deliver("load")
        assert d.status() is RunStatus.FAILED
        assert d.state.last_error == StepFailure(
            kind="unknown_step",
            message="step 'load' is no longer declared by workflow 'billing.charge'",
            retryable=False,
        )
        assert d.state.jobs == ()

    def test_outcome_of_a_removed_step_fails_the_run_clearly(self) -> None:
        d = new()
        d.deliver("load")
        d.definition = self.renamed()
        d.succeed("load", {"x": 1})
        assert d.status() is RunStatus.FAILED
        assert d.state.last_error is not None and d.state.last_error.kind == "unknown_step"

    def test_failure_of_a_removed_step_fails_the_run(self) -> None:
        d = new()
        d.deliver("load")
        d.definition = self.renamed()
        d.fail("load")
        assert d.status() is RunStatus.FAILED


def test_dependency_steps_see_reserved_context() -> None:
    wf = workflow(
        "w.deps",
        triggers=[manual()],
        steps=[step("a", handler), step("b", handler, after=["a"])],
    )
    d = Driver(wf, context={"schedule": {"tick": "t"}})
    d.deliver("a")
    a = d.state.step_run("a")
    assert a is not None and a.input == {"schedule": {"tick": "t"}}
