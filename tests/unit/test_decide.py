"""decide: starting runs, deliveries, successes and failures."""

from __future__ import annotations

from datetime import timedelta

import pytest
from returns.result import Failure

from squidmesh_core import (
    COMPLETE,
    AttemptStatus,
    Fixed,
    InvalidPayload,
    InvariantViolatedError,
    Retry,
    RunStatus,
    StepFailure,
    StepStatus,
    UnknownTrigger,
    chain,
    error,
    manual,
    ok,
    step,
    wait,
    workflow,
)
from squidmesh_core.protocol import (
    CancelRequested,
    Emit,
    FinishJob,
    JobDelivered,
    JobId,
    LeaseToken,
    RunRequested,
    StaleDelivery,
    StepSucceeded,
    Topic,
    decide,
)
from tests.unit.decide_flows import S, linear, new, topics
from tests.unit.helpers import OTHER_RUN, RUN, T0, Driver, handler


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
