"""The decider against the naive reference model, driven by generated event sequences.

Faults are first-class rules: duplicate deliveries, deliveries with a foreign
lease token, outcomes for finished jobs, expired leases, cancels at any moment
and clock jumps in both directions.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, Phase, assume, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule
from returns.result import Failure, Result, Success

from property_tests.core_invariants import CoreInvariants
from squidmesh_core import (
    RunId,
    RunStatus,
    StepFailure,
    StepStatus,
    WorkflowDefinition,
)
from squidmesh_core._table import (
    attempt_transition_allowed,
    run_transition_allowed,
    step_transition_allowed,
)
from squidmesh_core.codec import encode_run
from squidmesh_core.errors import IdempotencyKeyReused, RepeatedCommand, UnsafeReplay
from squidmesh_core.jsonvalue import check_json
from squidmesh_core.protocol import (
    ApproveRequested,
    CancelJob,
    CancelRequested,
    Decision,
    Event,
    FinishJob,
    JobDelivered,
    JobId,
    JobStart,
    JobStatus,
    Lease,
    LeaseExpired,
    LeaseToken,
    Operator,
    Rejected,
    RejectRequested,
    ReplayRequested,
    RescheduleJob,
    RunRequested,
    RunState,
    ScheduleJob,
    SignalSent,
    StepDeferred,
    StepFailed,
    StepSucceeded,
    UnblockRequested,
    decide,
    decide_delivery,
    decide_outcome,
    job_writes,
    parse_job_id,
)
from squidmesh_core.state import AuditEntry
from squidmesh_core.testing.reference import ReferenceModel, ReferenceRun
from squidmesh_core.testing.strategies import (
    BASE_TIME,
    json_objects,
    payloads,
    run_ids,
    step_failures,
    workflows,
)

pytestmark = pytest.mark.slow

KEYS = st.none() | st.sampled_from(["k1", "k2"])
"""Idempotency keys: mostly none, sometimes one already used."""


def check_commands(before: RunState, decision: Decision) -> None:
    """Job commands are exactly the difference between the old and new live jobs."""
    old = {j.id: j for j in before.jobs}
    new = {j.id: j for j in decision.state.jobs}
    scheduled = {c.job.id for c in decision.commands if isinstance(c, ScheduleJob)}
    dropped = {c.job_id for c in decision.commands if isinstance(c, CancelJob | FinishJob)}
    moved = {c.job_id: c.due_at for c in decision.commands if isinstance(c, RescheduleJob)}
    assert scheduled == set(new) - set(old)
    assert dropped == set(old) - set(new)
    assert moved == {k: v.due_at for k, v in new.items() if k in old and old[k].due_at != v.due_at}
    for job_id in dropped:
        finished = old[job_id].status is JobStatus.STARTED
        assert any(
            isinstance(c, FinishJob if finished else CancelJob) and c.job_id == job_id
            for c in decision.commands
        )


def check_table(before: RunState, after: RunState) -> None:
    """Every status change of an accepted decision is in the tables."""
    assert run_transition_allowed(before.status, after.status)
    for new in after.steps:
        old = before.step_run(new.step)
        if old is not None:
            assert step_transition_allowed(old.status, new.status)
            for attempt in new.attempts:
                prior = next((a for a in old.attempts if a.number == attempt.number), None)
                if prior is not None:
                    assert attempt_transition_allowed(prior.status, attempt.status)


class CoreMachine(CoreInvariants, RuleBasedStateMachine):
    definition: WorkflowDefinition
    state: RunState
    model: ReferenceModel
    run: ReferenceRun

    def __init__(self) -> None:
        super().__init__()
        self.tokens = 0
        self.finished_jobs: list[tuple[JobId, LeaseToken]] = []

    # -- helpers ---------------------------------------------------------------------

    def token(self) -> LeaseToken:
        self.tokens += 1
        return LeaseToken(f"lease-{self.tokens}")

    def apply(self, event: Event) -> Decision | None:
        return self.apply_decided(lambda: decide(self.definition, self.state, event, now=self.now))

    def apply_decided(self, deciding: Callable[[], Result[Decision, Rejected]]) -> Decision | None:
        before = self.state
        result = deciding()
        match result:
            case Success(Decision() as decision):
                check_table(before, decision.state)
                check_commands(before, decision)
                assert decision.state.version == before.version + 1
                if before.status.terminal:
                    assert decision.state.status == before.status
                    assert not any(isinstance(c, ScheduleJob) for c in decision.commands)
                self.state = decision.state
                if decision.state.compensation is not None:
                    event(f"compensation ends {decision.state.status}")
                return decision
            case Failure(_):
                assert deciding() == result  # refusals are deterministic too
                return None
        raise AssertionError(result)

    def jobs(self, status: JobStatus) -> list[JobId]:
        return [j.id for j in self.state.jobs if j.status is status]

    # -- rules -----------------------------------------------------------------------

    @initialize(definition=workflows(jitter=False, people=True), run_id=run_ids, payload=payloads)
    def start(
        self, definition: WorkflowDefinition, run_id: RunId, payload: dict[str, object]
    ) -> None:
        self.definition = definition
        self.now = BASE_TIME
        self.model = ReferenceModel(definition)
        result = decide(
            definition, None, RunRequested(run_id=run_id, payload=payload), now=self.now
        )
        self.state = result.unwrap().state
        self.run: ReferenceRun = self.model.start(self.state.id, self.now)

    @precondition(lambda self: any(j.status is JobStatus.SCHEDULED for j in self.state.jobs))
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        self._deliver(data.draw(st.sampled_from(self.jobs(JobStatus.SCHEDULED))))

    def _deliver(self, job_id: JobId) -> None:
        token = self.token()
        accepted = self.apply(JobDelivered(job_id=job_id, lease_token=token)) is not None
        assert accepted == self.model.deliver(self.run, job_id, token, self.now)

    @precondition(lambda self: any(j.status is JobStatus.SCHEDULED for j in self.state.jobs))
    @rule(data=st.data())
    def claimed_delivery(self, data: st.DataObject) -> None:
        """The worker's entry point: ``decide_delivery`` starts exactly what the model starts."""
        job_id = data.draw(st.sampled_from(self.jobs(JobStatus.SCHEDULED)))
        token = self.token()
        decision = self.apply_decided(
            lambda: decide_delivery(
                self.definition, self.state, job_id=job_id, lease_token=token, now=self.now
            )
        )
        assert (decision is not None) == self.model.deliver(self.run, job_id, token, self.now)
        if decision is not None:
            assert not decision.reclaimed
            started = decision.started
            assert (started is not None) == self.model.last_started
            if started is not None:
                assert (started.job_id, started.lease_token) == (job_id, token)
                assert job_writes(decision).starts == (JobStart(job_id=job_id, lease_token=token),)

    @precondition(lambda self: any(j.status is JobStatus.STARTED for j in self.state.jobs))
    @rule(data=st.data(), hand_off=st.booleans())
    def reclaimed_delivery(self, data: st.DataObject, hand_off: bool) -> None:
        """A started job claimed again under a new lease: its attempt is lost (a reclaim).

        With a lease for the retry, a retry due at once starts in the same decision.
        """
        job_id = data.draw(st.sampled_from(self.jobs(JobStatus.STARTED)))
        old = self._token_of(job_id)
        lease = (
            Lease(token=self.token(), until=self.now + timedelta(seconds=30), owner="w")
            if hand_off
            else None
        )
        decision = self.apply_decided(
            lambda: decide_delivery(
                self.definition,
                self.state,
                job_id=job_id,
                lease_token=self.token(),
                now=self.now,
                next_lease=lease,
            )
        )
        assert decision is not None and decision.reclaimed
        assert self.model.fail(
            self.run, job_id, old, retryable=True, retry_after=None, now=self.now, lost=True
        )
        self.finished_jobs.append((job_id, old))
        started = decision.started
        if lease is None or started is None:
            assert started is None
            assert all(j.id != job_id or j.status is not JobStatus.STARTED for j in self.state.jobs)
            return
        lost_key = parse_job_id(job_id).unwrap()
        if started.step == lost_key.step:  # a retry (else the step's error route)
            assert started.attempt == lost_key.attempt + 1
        assert started.lease_token == lease.token
        assert self.model.deliver(self.run, started.job_id, lease.token, self.now)
        leased = [i for i in job_writes(decision).inserts if i.lease is not None]
        assert [(i.job.id, i.lease) for i in leased] == [(started.job_id, lease)]

    @precondition(lambda self: any(j.status is JobStatus.STARTED for j in self.state.jobs))
    @rule(data=st.data(), output=json_objects)
    def succeed_and_hand_off(self, data: st.DataObject, output: dict[str, object]) -> None:
        """``decide_outcome`` with a lease: the outcome plus the start of one job due now."""
        job_id = data.draw(st.sampled_from(self.jobs(JobStatus.STARTED)))
        token = self._token_of(job_id)
        lease = Lease(token=self.token(), until=self.now + timedelta(seconds=30), owner="w")
        event = StepSucceeded(job_id=job_id, lease_token=token, output=output)
        decision = self.apply_decided(
            lambda: decide_outcome(
                self.definition, self.state, event, now=self.now, next_lease=lease
            )
        )
        assert decision is not None
        assert self.model.succeed(self.run, job_id, token, output, self.now)
        self.finished_jobs.append((job_id, token))
        started = decision.started
        if started is None:
            assert not any(
                j.status is JobStatus.STARTED and j.lease_token == lease.token
                for j in self.state.jobs
            )
            return
        assert started.lease_token == lease.token
        assert self.model.deliver(self.run, started.job_id, lease.token, self.now)
        leased = [i for i in job_writes(decision).inserts if i.lease is not None]
        assert [(i.job.id, i.lease) for i in leased] == [(started.job_id, lease)]
        assert leased[0].job.status is JobStatus.STARTED
        assert all(j.id != started.job_id for j in decision.due_now(self.now))

    @precondition(lambda self: any(j.status is JobStatus.STARTED for j in self.state.jobs))
    @rule(data=st.data(), same_token=st.booleans())
    def duplicate_delivery(self, data: st.DataObject, same_token: bool) -> None:
        job_id = data.draw(st.sampled_from(self.jobs(JobStatus.STARTED)))
        job = self.state.job(job_id)
        assert job is not None and job.lease_token is not None
        token = job.lease_token if same_token else self.token()
        assert self.apply(JobDelivered(job_id=job_id, lease_token=token)) is None

    @precondition(lambda self: any(j.status is JobStatus.STARTED for j in self.state.jobs))
    @rule(data=st.data(), output=json_objects)
    def succeed(self, data: st.DataObject, output: dict[str, object]) -> None:
        self._succeed(data.draw(st.sampled_from(self.jobs(JobStatus.STARTED))), output)

    def _succeed(self, job_id: JobId, output: dict[str, object]) -> None:
        token = self._token_of(job_id)
        accepted = self.apply(StepSucceeded(job_id=job_id, lease_token=token, output=output))
        assert accepted is not None
        assert self.model.succeed(self.run, job_id, token, output, self.now)
        self.finished_jobs.append((job_id, token))

    @precondition(lambda self: any(j.status is JobStatus.STARTED for j in self.state.jobs))
    @rule(data=st.data())
    def succeed_with_unstorable_output(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(self.jobs(JobStatus.STARTED)))
        token = self._token_of(job_id)
        output = data.draw(
            st.sampled_from([{"x": float("nan")}, {"x": "a\x00b"}, ["not", "an", "object"]])
        )
        assert (
            self.apply(StepSucceeded(job_id=job_id, lease_token=token, output=output)) is not None
        )
        assert self.model.fail(
            self.run, job_id, token, retryable=False, retry_after=None, now=self.now
        )
        self.finished_jobs.append((job_id, token))

    @precondition(lambda self: any(j.status is JobStatus.STARTED for j in self.state.jobs))
    @rule(data=st.data(), failure=step_failures)
    def fail(self, data: st.DataObject, failure: object) -> None:
        from squidmesh_core import StepFailure

        assert isinstance(failure, StepFailure)
        job_id = data.draw(st.sampled_from(self.jobs(JobStatus.STARTED)))
        token = self._token_of(job_id)
        assert self.apply(StepFailed(job_id=job_id, lease_token=token, failure=failure)) is not None
        assert self.model.fail(
            self.run,
            job_id,
            token,
            retryable=failure.retryable,
            retry_after=failure.retry_after,
            now=self.now,
        )
        self.finished_jobs.append((job_id, token))

    @precondition(lambda self: any(j.status is JobStatus.STARTED for j in self.state.jobs))
    @rule(data=st.data(), seconds=st.integers(min_value=0, max_value=7200))
    def step_defers(self, data: st.DataObject, seconds: int) -> None:
        """The step says "not yet, look again in N": a re-check that uses no retry."""
        job_id = data.draw(st.sampled_from(self.jobs(JobStatus.STARTED)))
        token = self._token_of(job_id)
        delay = timedelta(seconds=seconds)
        event = StepDeferred(job_id=job_id, lease_token=token, after=delay, reason="not yet")
        assert self.apply(event) is not None
        assert self.model.defer(self.run, job_id, token, delay, self.now)
        self.finished_jobs.append((job_id, token))

    @precondition(lambda self: any(j.status is JobStatus.STARTED for j in self.state.jobs))
    @rule(data=st.data())
    def lease_expires(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(self.jobs(JobStatus.STARTED)))
        token = self._token_of(job_id)
        assert self.apply(LeaseExpired(job_id=job_id, lease_token=token)) is not None
        assert self.model.fail(
            self.run, job_id, token, retryable=True, retry_after=None, now=self.now, lost=True
        )
        self.finished_jobs.append((job_id, token))

    @precondition(lambda self: bool(self.finished_jobs))
    @rule(data=st.data(), kind=st.sampled_from(["deliver", "succeed", "fail", "expire"]))
    def stale_message(self, data: st.DataObject, kind: str) -> None:
        job_id, token = data.draw(st.sampled_from(self.finished_jobs))
        assume(self.state.job(job_id) is None)
        events: dict[str, Event] = {
            "deliver": JobDelivered(job_id=job_id, lease_token=token),
            "succeed": StepSucceeded(job_id=job_id, lease_token=token, output={}),
            "fail": StepFailed(job_id=job_id, lease_token=token, failure=data.draw(step_failures)),
            "expire": LeaseExpired(job_id=job_id, lease_token=token),
        }
        assert self.apply(events[kind]) is None

    @precondition(lambda self: any(j.status is JobStatus.STARTED for j in self.state.jobs))
    @rule(data=st.data())
    def outcome_with_foreign_token(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(self.jobs(JobStatus.STARTED)))
        assert self.apply(StepSucceeded(job_id=job_id, lease_token=self.token(), output={})) is None

    @precondition(lambda self: any(j.status is JobStatus.STARTED for j in self.state.jobs))
    @rule(data=st.data(), kind=st.sampled_from(["fail", "expire"]))
    def other_outcomes_with_a_foreign_token(self, data: st.DataObject, kind: str) -> None:
        job_id = data.draw(st.sampled_from(self.jobs(JobStatus.STARTED)))
        event: Event = (
            StepFailed(job_id=job_id, lease_token=self.token(), failure=data.draw(step_failures))
            if kind == "fail"
            else LeaseExpired(job_id=job_id, lease_token=self.token())
        )
        assert self.apply(event) is None

    @precondition(lambda self: any(j.status is JobStatus.SCHEDULED for j in self.state.jobs))
    @rule(data=st.data())
    def outcome_before_delivery(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(self.jobs(JobStatus.SCHEDULED)))
        assert self.apply(StepSucceeded(job_id=job_id, lease_token=self.token(), output={})) is None

    @rule(data=st.data())
    def forged_job_id(self, data: st.DataObject) -> None:
        step_name = data.draw(st.sampled_from(["alpha", "bravo", "ghost"]))
        attempt = data.draw(st.integers(min_value=1, max_value=9))
        forged = JobId(f"{data.draw(run_ids)}/{step_name}/{attempt}")
        assert self.apply(JobDelivered(job_id=forged, lease_token=self.token())) is None

    @precondition(lambda self: any(j.status is JobStatus.STARTED for j in self.state.jobs))
    @rule(data=st.data())
    def fail_with_unstorable_failure(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(self.jobs(JobStatus.STARTED)))
        token = self._token_of(job_id)
        failure = StepFailure(kind="x", message="bad\x00", details={"n": float("nan")})
        assert self.apply(StepFailed(job_id=job_id, lease_token=token, failure=failure)) is not None
        assert self.model.fail(
            self.run, job_id, token, retryable=True, retry_after=None, now=self.now
        )
        self.finished_jobs.append((job_id, token))
        assert isinstance(check_json(encode_run(self.state)), Success)

    @rule(new_id=run_ids)
    def replay_leaves_the_source_alone(self, new_id: RunId) -> None:
        guarded = tuple(
            s.step
            for s in self.state.steps
            if s.status is StepStatus.COMPLETED
            and self.definition.step(s.step) is not None
            and (self.model.guarded(s.step))
        )
        plain = decide(
            self.definition, self.state, ReplayRequested(new_run_id=new_id), now=self.now
        )
        if guarded:
            assert plain == Failure(UnsafeReplay(run_id=self.state.id, steps=guarded))
        result = decide(
            self.definition,
            self.state,
            ReplayRequested(new_run_id=new_id, allow_irreversible=True),
            now=self.now,
        )
        replay = result.unwrap()
        assert replay.state.id == new_id and replay.state.replayed_from == self.state.id
        fresh = self.model.start(new_id, self.now)
        assert replay.state.status.value == fresh.status
        assert {j.id for j in replay.state.jobs} == set(fresh.jobs)
        assert [e.command.value for e in replay.state.audit] == ["replay"]

    @rule(roll=st.integers(min_value=0, max_value=7), key=KEYS)
    def cancel(self, roll: int, key: str | None) -> None:
        # Cancelling ends most runs, so it fires on one roll in eight to leave room
        # for long histories; every other roll is a no-op.
        if roll:
            return
        self._command("cancel", CancelRequested(by=Operator(idempotency_key=key)), key)

    def _command(
        self, command: str, fact: Event, key: str | None, payload: dict[str, object] | None = None
    ) -> None:
        before = self.state
        result = decide(self.definition, self.state, fact, now=self.now)
        expected = self.model.command(
            self.run, command, key=key, actor="ana", note=None, now=self.now, payload=payload
        )
        event(f"{command}: {expected}")
        match result:
            case Success(decision):
                assert expected == "accepted", expected
                self.apply_decided(lambda: Success(decision))
                entry = self.state.audit[-1]
                assert (entry.command.value, entry.idempotency_key) == (command, key)
            case Failure(RepeatedCommand(entry=entry)):
                assert expected == "repeated", expected
                assert isinstance(entry, AuditEntry) and entry.idempotency_key == key
                assert self.state == before
            case Failure(IdempotencyKeyReused()):
                assert expected == "reused", expected
            case Failure(_):
                assert expected == "refused", (expected, result)

    @rule(
        command=st.sampled_from(["unblock", "approve", "reject"]),
        key=KEYS,
    )
    def resume(self, command: str, key: str | None) -> None:
        by = Operator(actor="ana", idempotency_key=key)
        events: dict[str, Event] = {
            "unblock": UnblockRequested(by=by),
            "approve": ApproveRequested(by=by),
            "reject": RejectRequested(by=by),
        }
        self._command(command, events[command], key)

    @rule(key=KEYS, valid=st.booleans())
    def signal(self, key: str | None, valid: bool) -> None:
        """A signal at any moment: before the wait (kept), during it (taken), after the run."""
        payload: dict[str, object] = {"code": "c"} if valid else {"wrong": 1}
        has_signal_step = any(s.kind.value == "signal" for s in self.definition.steps)
        fact = SignalSent(name="go", payload=payload, by=Operator(idempotency_key=key))
        self._command("signal", fact, key, payload if valid and has_signal_step else None)

    @rule(seconds=st.integers(min_value=-3600, max_value=6 * 3600))
    def clock_jumps(self, seconds: int) -> None:
        self.now = self.now + timedelta(seconds=seconds)

    def _settle_parked(self, turn: int) -> None:
        """Resolve the parked step as a person or another system would."""
        parked = self.state.parked_step
        assert parked is not None and parked.parked is not None
        by = Operator(actor="ana")
        match parked.parked.kind.value:
            case "pause":
                self._command("unblock", UnblockRequested(by=by), None)
            case "approval" if turn % 4 == 1:
                self._command("reject", RejectRequested(by=by), None)
            case "approval":
                self._command("approve", ApproveRequested(by=by), None)
            case _:
                payload: dict[str, object] = {"code": f"t{turn}"}
                self._command("signal", SignalSent(name="go", payload=payload), None, payload)

    def _token_of(self, job_id: JobId) -> LeaseToken:
        job = self.state.job(job_id)
        assert job is not None
        token = job.lease_token
        assert token is not None
        return token

    def teardown(self) -> None:
        """Deliver every job and report mixed outcomes: the run must end within a bounded count."""
        if not hasattr(self, "state"):
            return
        for turn in range(400):
            if self.state.status.terminal and not self.state.jobs:
                return
            if self.state.status is RunStatus.PAUSED and (turn % 2 or not self.state.jobs):
                self._settle_parked(turn)
                self.check_all()
                continue
            job = min(self.state.jobs, key=lambda j: (j.due_at, j.id))
            self.now = max(self.now, job.due_at)
            if job.status is JobStatus.SCHEDULED:
                self._deliver(job.id)
            elif turn % 7 == 3:  # a step that fails for good: the run may compensate
                token = self._token_of(job.id)
                fatal = StepFailure(kind="step_failed", message="drained", retryable=False)
                self.apply(StepFailed(job_id=job.id, lease_token=token, failure=fatal))
                self.model.fail(
                    self.run, job.id, token, retryable=False, retry_after=None, now=self.now
                )
            elif turn % 3 == 2:
                token = self._token_of(job.id)
                self.apply(LeaseExpired(job_id=job.id, lease_token=token))
                self.model.fail(
                    self.run,
                    job.id,
                    token,
                    retryable=True,
                    retry_after=None,
                    now=self.now,
                    lost=True,
                )
            else:
                self._succeed(job.id, {"drained": job.step})
            self.check_all()
        raise AssertionError(f"run did not finish: {self.state.status} {self.state.jobs}")


CoreMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestCoreMachine = pytest.mark.timeout(900)(CoreMachine.TestCase)
