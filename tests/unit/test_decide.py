from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import BaseModel
from returns.result import Failure

from squidmesh_core import (
    COMPLETE,
    AttemptStatus,
    Fixed,
    InvalidPayload,
    InvalidTransition,
    InvariantViolatedError,
    Retry,
    RunId,
    RunStatus,
    StepFailure,
    StepStatus,
    UnknownTrigger,
    WorkflowDefinition,
    chain,
    error,
    log,
    manual,
    ok,
    step,
    wait,
    workflow,
)
from squidmesh_core.protocol import (
    CancelJob,
    CancelRequested,
    Emit,
    FinishJob,
    JobDelivered,
    JobId,
    LeaseToken,
    ReplayRequested,
    RescheduleJob,
    RunRequested,
    ScheduleJob,
    StaleDelivery,
    StepSucceeded,
    Topic,
    decide,
)
from tests.unit.helpers import OTHER_RUN, RUN, T0, Driver, handler

S = timedelta(seconds=1)


class Charge(BaseModel):
    account_id: str
    amount: int = 10


def linear(*, retry: Retry | None = None) -> WorkflowDefinition:
    return workflow(
        "billing.charge",
        triggers=[manual("charge", payload=Charge), manual("manual_retry", payload=Charge)],
        steps=[
            step("load", handler, output="invoice"),
            wait("settle", timedelta(hours=6)),
            log("note", "charging"),
            step("charge", handler, retry=retry, input=["account_id", "invoice"]),
        ],
        transitions=chain("load", "settle", "note", "charge", COMPLETE),
    )


def topics(driver: Driver) -> list[str]:
    return [c.topic.value for c in driver.decision.commands if isinstance(c, Emit)]


def new(retry: Retry | None = None) -> Driver:
    return Driver(linear(retry=retry), {"account_id": "acc-1"})


class TestStart:
    def test_creates_a_pending_run_with_the_entry_job_due_now(self) -> None:
        d = new()
        assert d.status() is RunStatus.PENDING
        assert d.state.version == 1
        assert d.state.payload == {"account_id": "acc-1", "amount": 10}
        assert d.state.trigger == "charge"
        assert d.scheduled() == [("load", 1, T0)]
        assert d.state.jobs[0].id == f"{RUN}/load/1"
        assert topics(d) == ["run.created"]
        assert d.decision.expected_version == 0
        assert [j.step for j in d.decision.jobs_scheduled] == ["load"]

    def test_named_trigger(self) -> None:
        d = Driver(linear(), {"account_id": "a"}, trigger="manual_retry")
        assert d.state.trigger == "manual_retry"

    def test_unknown_trigger(self) -> None:
        result = decide(
            linear(),
            None,
            RunRequested(run_id=RUN, payload={}, trigger="nope"),
            now=T0,
        )
        assert result == Failure(UnknownTrigger(workflow="billing.charge", trigger="nope"))

    def test_invalid_payload_creates_nothing(self) -> None:
        result = decide(linear(), None, RunRequested(run_id=RUN, payload={"amount": "x"}), now=T0)
        assert isinstance(result, Failure)
        problem = result.failure()
        assert isinstance(problem, InvalidPayload)
        assert problem.missing == ("account_id",)

    def test_idempotency_key_and_context_are_kept(self) -> None:
        d = Driver(
            linear(),
            {"account_id": "a"},
            idempotency_key="key-1",
            context={"schedule": {"tick": "2026-01-01T00:00:00Z"}},
        )
        assert d.state.idempotency_key == "key-1"
        assert d.state.context == {"schedule": {"tick": "2026-01-01T00:00:00Z"}}

    def test_existing_state_for_a_new_run_is_a_bug(self) -> None:
        d = new()
        with pytest.raises(InvariantViolatedError):
            decide(d.definition, d.state, RunRequested(run_id=RUN, payload={}), now=T0)

    def test_missing_state_is_a_bug(self) -> None:
        with pytest.raises(InvariantViolatedError):
            decide(linear(), None, CancelRequested(), now=T0)

    def test_state_of_another_workflow_is_a_bug(self) -> None:
        other = workflow(
            "other",
            triggers=[manual()],
            steps=[step("a", handler)],
            transitions=chain("a", COMPLETE),
        )
        with pytest.raises(InvariantViolatedError):
            decide(other, new().state, CancelRequested(), now=T0)


class TestDelivery:
    def test_first_delivery_starts_an_attempt_and_the_run(self) -> None:
        d = new()
        job = d.deliver("load")
        run = d.state
        assert run.status is RunStatus.RUNNING
        load = run.step_run("load")
        assert load is not None and load.status is StepStatus.RUNNING
        assert load.input == {"account_id": "acc-1", "amount": 10}
        assert [(a.number, a.status, a.lease_token) for a in load.attempts] == [
            (1, AttemptStatus.RUNNING, "t1")
        ]
        assert run.job(job).lease_token == "t1"  # type: ignore[union-attr]
        assert topics(d) == ["step.started", "run.transition"]

    def test_duplicate_delivery_with_the_same_token_is_stale(self) -> None:
        d = new()
        job = d.deliver("load")
        rejected = d.reject(JobDelivered(job_id=job, lease_token=LeaseToken("t1")))
        assert rejected == StaleDelivery(
            job_id=job, reason="duplicate delivery: the attempt is already running"
        )

    def test_delivery_with_another_token_is_stale(self) -> None:
        d = new()
        job = d.deliver("load")
        rejected = d.reject(JobDelivered(job_id=job, lease_token=LeaseToken("other")))
        assert rejected.reason == "the job is leased to another worker"  # type: ignore[union-attr]

    @pytest.mark.parametrize(
        "job_id",
        [f"{RUN}/charge/1", f"{OTHER_RUN}/load/1", f"{RUN}/load/2", "garbage"],
    )
    def test_unknown_or_forged_jobs_are_stale(self, job_id: str) -> None:
        d = new()
        rejected = d.reject(JobDelivered(job_id=JobId(job_id), lease_token=LeaseToken("x")))
        assert rejected == StaleDelivery(job_id=job_id, reason="no live job with this id")

    def test_delivery_after_the_run_finished_says_so(self) -> None:
        d = new()
        job = d.job()
        d.accept(CancelRequested())
        rejected = d.reject(JobDelivered(job_id=job, lease_token=LeaseToken("x")))
        assert rejected.reason == "no live job with this id (run is cancelled)"  # type: ignore[union-attr]

    def test_outcome_before_delivery_is_stale(self) -> None:
        d = new()
        rejected = d.reject(StepSucceeded(job_id=d.job(), lease_token=LeaseToken("x"), output={}))
        assert rejected.reason == "the job has not been delivered"  # type: ignore[union-attr]

    def test_outcome_with_a_foreign_token_is_stale(self) -> None:
        d = new()
        job = d.deliver()
        rejected = d.reject(StepSucceeded(job_id=job, lease_token=LeaseToken("x"), output={}))
        assert rejected.reason == "lease token does not match the current lease"  # type: ignore[union-attr]

    def test_lateness_is_reported(self) -> None:
        d = new()
        d.advance(S * 3)
        d.deliver()
        started = next(c for c in d.decision.commands if isinstance(c, Emit))
        assert started.attributes["lateness_ms"] == 3000


class TestSuccess:
    def test_output_is_mapped_merged_and_the_next_step_scheduled(self) -> None:
        d = new()
        d.deliver("load")
        d.advance(S)
        d.succeed("load", {"total": 99})
        assert d.state.context == {"invoice": {"total": 99}}
        load = d.state.step_run("load")
        assert load is not None and load.output == {"invoice": {"total": 99}}
        assert load.attempts[0].status is AttemptStatus.SUCCEEDED
        assert load.attempts[0].finished_at == T0 + S
        assert d.scheduled() == [("settle", 1, T0 + S)]
        assert isinstance(d.decision.commands[0], FinishJob)
        completed = next(c for c in d.decision.commands if isinstance(c, Emit))
        assert completed.topic is Topic.STEP_COMPLETED
        assert completed.attributes == {"duration_ms": 1000}

    def test_wait_delays_the_next_step(self) -> None:
        d = new()
        d.run_step("load")
        d.run_step("settle")
        assert d.scheduled() == [("note", 1, T0 + timedelta(hours=6))]
        assert d.status() is RunStatus.RUNNING

    def test_input_mapping_narrows_the_input(self) -> None:
        d = new()
        d.run_step("load", {"total": 5})
        d.run_step("settle")
        d.run_step("note")
        d.deliver("charge")
        charge = d.state.step_run("charge")
        assert charge is not None
        assert charge.input == {"account_id": "acc-1", "invoice": {"total": 5}}

    def test_last_step_completes_the_run(self) -> None:
        d = new()
        for name in ("load", "settle", "note", "charge"):
            d.run_step(name)
        assert d.status() is RunStatus.COMPLETED
        assert d.state.jobs == ()
        assert topics(d)[-1] == "run.transition"

    def test_wait_routed_to_complete_completes_at_once(self) -> None:
        wf = workflow(
            "w",
            triggers=[manual()],
            steps=[wait("w", timedelta(days=1))],
            transitions=chain("w", COMPLETE),
        )
        d = Driver(wf)
        d.run_step("w")
        assert d.status() is RunStatus.COMPLETED

    @pytest.mark.parametrize(
        ("output", "why"),
        [
            ({"x": float("nan")}, "output.x is not a finite number"),
            ({"x": "\x00"}, "output.x contains a NUL character"),
            ([1, 2], "output is a list, expected an object"),
            ({"x": object()}, "output.x is a object, which is not JSON"),
        ],
    )
    def test_unstorable_output_is_a_non_retryable_failure(self, output: object, why: str) -> None:
        d = new(retry=Retry(max_attempts=5))
        d.run_step("load")
        d.run_step("settle")
        d.run_step("note")
        d.deliver("charge")
        job = d.job("charge")
        d.accept(StepSucceeded(job_id=job, lease_token=d.token_of(job), output=output))
        assert d.status() is RunStatus.FAILED
        assert d.state.last_error == StepFailure(
            kind="invalid_output",
            message=f"step 'charge' returned unstorable output: {why}",
            retryable=False,
        )


class TestFailure:
    def test_retry_is_scheduled_with_backoff(self) -> None:
        d = new(retry=Retry(max_attempts=3, backoff=Fixed(delay=S * 30)))
        for name in ("load", "settle", "note"):
            d.run_step(name)
        d.deliver("charge")
        d.fail("charge")
        charge = d.state.step_run("charge")
        assert charge is not None and charge.status is StepStatus.RETRY_SCHEDULED
        assert d.status() is RunStatus.RETRYING
        assert d.state.last_error is not None and d.state.last_error.message == "boom"
        assert ("charge", 2, d.now + S * 30) in d.scheduled()
        assert topics(d) == ["step.failed", "step.retry_scheduled", "run.transition"]
        retry_event = [c for c in d.decision.commands if isinstance(c, Emit)][1]
        assert retry_event.attributes["delay_ms"] == 30_000
        assert retry_event.attempt == 2

    def test_retry_delivery_resumes_running(self) -> None:
        d = new(retry=Retry(max_attempts=3))
        for name in ("load", "settle", "note"):
            d.run_step(name)
        d.deliver("charge")
        d.fail("charge")
        d.deliver("charge")
        assert d.status() is RunStatus.RUNNING
        charge = d.state.step_run("charge")
        assert charge is not None and [a.number for a in charge.attempts] == [1, 2]

    def test_exhausted_retries_fail_the_run(self) -> None:
        d = new(retry=Retry(max_attempts=2))
        for name in ("load", "settle", "note"):
            d.run_step(name)
        for _ in range(2):
            d.deliver("charge")
            d.fail("charge")
        assert d.status() is RunStatus.FAILED
        charge = d.state.step_run("charge")
        assert charge is not None and charge.status is StepStatus.FAILED
        assert [a.status for a in charge.attempts] == [AttemptStatus.FAILED] * 2

    def test_non_retryable_failure_skips_retries(self) -> None:
        d = new(retry=Retry(max_attempts=5))
        for name in ("load", "settle", "note"):
            d.run_step(name)
        d.deliver("charge")
        d.fail("charge", StepFailure(kind="declined", message="card declined", retryable=False))
        assert d.status() is RunStatus.FAILED

    def test_retry_after_sets_the_due_time(self) -> None:
        d = new(retry=Retry(max_attempts=2, backoff=Fixed(delay=S * 100)))
        for name in ("load", "settle", "note"):
            d.run_step(name)
        d.deliver("charge")
        d.fail("charge", StepFailure(kind="http", message="429", retry_after=S * 7))
        assert ("charge", 2, d.now + S * 7) in d.scheduled()

    def test_error_route_to_a_step(self) -> None:
        wf = workflow(
            "w",
            triggers=[manual()],
            steps=[step("charge", handler), step("refund", handler)],
            transitions=[ok("charge", COMPLETE), error("charge", "refund"), ok("refund", COMPLETE)],
        )
        d = Driver(wf)
        d.deliver("charge")
        d.fail("charge")
        assert d.status() is RunStatus.RUNNING
        assert d.state.last_error is None
        assert d.scheduled() == [("refund", 1, T0)]
        d.run_step("refund")
        assert d.status() is RunStatus.COMPLETED

    def test_error_route_to_complete(self) -> None:
        wf = workflow(
            "w",
            triggers=[manual()],
            steps=[step("charge", handler)],
            transitions=[ok("charge", COMPLETE), error("charge", COMPLETE)],
        )
        d = Driver(wf)
        d.deliver()
        d.fail()
        assert d.status() is RunStatus.COMPLETED

    def test_expired_lease_counts_as_a_lost_attempt_and_retries(self) -> None:
        d = new(retry=Retry(max_attempts=2))
        for name in ("load", "settle", "note"):
            d.run_step(name)
        d.deliver("charge")
        d.expire("charge")
        charge = d.state.step_run("charge")
        assert charge is not None
        assert charge.attempts[0].status is AttemptStatus.LOST
        assert charge.error is not None and charge.error.kind == "worker_lost"
        assert "lease.reclaimed" in topics(d)
        d.run_step("charge")
        assert d.status() is RunStatus.COMPLETED

    def test_a_lost_attempt_runs_again_without_a_retry_policy_up_to_max_lost(self) -> None:
        d = new()  # "load" has no retry policy and the default max_lost of 3
        for _ in range(3):
            d.deliver("load")
            d.expire("load")
            assert d.status() is RunStatus.RETRYING
            assert [job.due_at for job in d.state.jobs] == [d.now]  # again at once
        d.deliver("load")
        d.expire("load")  # the fourth lost attempt gives up
        assert d.status() is RunStatus.FAILED
        assert d.state.last_error is not None and d.state.last_error.kind == "worker_lost"

    def test_lost_attempts_do_not_use_up_failure_retries(self) -> None:
        d = new(retry=Retry(max_attempts=2))
        for name in ("load", "settle", "note"):
            d.run_step(name)
        d.deliver("charge")
        d.expire("charge")  # lost: attempt 2 runs, and the policy still allows 2 failures
        d.deliver("charge")
        d.fail("charge")  # first failure: attempt 3 is the retry
        d.deliver("charge")
        d.succeed("charge")
        charge = d.state.step_run("charge")
        assert charge is not None
        assert [a.status for a in charge.attempts] == [
            AttemptStatus.LOST,
            AttemptStatus.FAILED,
            AttemptStatus.SUCCEEDED,
        ]
        assert d.status() is RunStatus.COMPLETED


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
