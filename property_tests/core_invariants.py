"""The invariants the core machine checks after every step (a mixin of ``CoreMachine``)."""

from __future__ import annotations

from hypothesis.stateful import invariant

from squidmesh_core import AttemptStatus, RunStatus, StepStatus, WorkflowDefinition
from squidmesh_core.protocol import JobStatus, RunState
from squidmesh_core.testing.reference import ReferenceRun
from squidmesh_core.testing.strategies import BASE_TIME


class CoreInvariants:
    """What must hold of the run after every rule; ``check_all`` runs them in the drain."""

    definition: WorkflowDefinition
    state: RunState
    run: ReferenceRun

    # -- invariants --------------------------------------------------------------------

    @invariant()
    def agrees_with_model(self) -> None:
        assert self.state.status.value == self.run.status
        assert {s.step: s.status.value for s in self.state.steps} == self.run.steps
        assert {
            s.step: [a.status.value for a in s.attempts] for s in self.state.steps
        } == self.run.attempts
        assert {j.id: (j.due_at, j.lease_token) for j in self.state.jobs} == {
            k: (v.due, v.token) for k, v in self.run.jobs.items()
        }
        assert dict(self.state.context) == self.run.context
        assert {
            s.step: s.output for s in self.state.steps if s.output is not None
        } == self.run.outputs
        assert (self.state.last_error is None) == (self.run.last_error is None)
        assert [(e.command.value, e.idempotency_key) for e in self.state.audit] == self.run.audit
        assert [(dict(s.payload), s.consumed_by) for s in self.state.signals] == self.run.inbox

    @invariant()
    def a_parked_run_holds_no_lease_and_no_job_but_its_timeout(self) -> None:
        if self.state.status is RunStatus.PAUSED:
            parked = self.state.parked_step
            assert parked is not None and parked.parked is not None
            assert all(j.status is JobStatus.SCHEDULED for j in self.state.jobs)
            timers = [j.id for j in self.state.jobs if j.step != "__deadline__"]
            assert timers == (
                [] if parked.parked.timeout_job is None else [parked.parked.timeout_job]
            )

    @invariant()
    def a_timed_out_attempt_never_commits_an_outcome(self) -> None:
        for step_run in self.state.steps:
            for a in step_run.attempts:
                if (
                    a.timeout_at is not None
                    and a.finished_at is not None
                    and a.status in (AttemptStatus.SUCCEEDED, AttemptStatus.DEFERRED)
                ):
                    assert a.finished_at < a.timeout_at

    @invariant()
    def a_deferral_never_consumes_a_retry(self) -> None:
        for step_run in self.state.steps:
            failed = [a for a in step_run.attempts if a.status is AttemptStatus.FAILED]
            spec = self.definition.step(step_run.step)
            limit = 1 if spec is None or spec.retry is None else spec.retry.max_attempts
            assert len(failed) <= limit  # deferrals and lost attempts never count

    @invariant()
    def compensations_run_once_each_latest_completion_first(self) -> None:
        undoing = [s for s in self.state.steps if s.step.endswith(":compensate")]
        for step_run in undoing:
            succeeded = [a for a in step_run.attempts if a.status is AttemptStatus.SUCCEEDED]
            assert len(succeeded) <= 1
        live = [j for j in self.state.jobs if j.step.endswith(":compensate")]
        assert len(live) <= 1
        if live or undoing:
            assert self.state.compensation is not None
        compensation = self.state.compensation
        if compensation is None:
            return
        assert {s.step.removesuffix(":compensate") for s in undoing} <= set(compensation.plan)
        done_at = [
            max(
                a.finished_at or BASE_TIME
                for a in s.attempts
                if a.status is AttemptStatus.SUCCEEDED
            )
            for p in compensation.plan
            if (s := self.state.step_run(p)) is not None and s.status is StepStatus.COMPLETED
        ]
        assert done_at == sorted(done_at, reverse=True)  # latest completion first
        if compensation.finished_at is not None:  # each planned compensation ran to an end
            for p in compensation.plan:
                ended = self.state.step_run(p + ":compensate")
                assert ended is not None and ended.status.terminal
        if self.state.status is RunStatus.COMPENSATING:
            assert not any(
                j.status is JobStatus.SCHEDULED and not j.step.endswith(":compensate")
                for j in self.state.jobs
            )

    @invariant()
    def every_key_has_one_audit_entry(self) -> None:
        keys = [e.idempotency_key for e in self.state.audit if e.idempotency_key is not None]
        assert len(keys) == len(set(keys))

    @invariant()
    def at_most_one_live_attempt_per_step(self) -> None:
        for step_run in self.state.steps:
            running = [a for a in step_run.attempts if a.status is AttemptStatus.RUNNING]
            assert len(running) <= 1
            if running:
                assert step_run.status is StepStatus.RUNNING

    @invariant()
    def attempt_numbers_only_grow(self) -> None:
        for step_run in self.state.steps:
            assert [a.number for a in step_run.attempts] == list(
                range(1, len(step_run.attempts) + 1)
            )

    @invariant()
    def terminal_runs_schedule_nothing(self) -> None:
        if self.state.status.terminal:
            assert all(j.status is JobStatus.STARTED for j in self.state.jobs)

    @invariant()
    def active_runs_have_a_live_job(self) -> None:
        if not self.state.status.terminal and self.state.status is not RunStatus.PAUSED:
            assert self.state.jobs

    def check_all(self) -> None:
        self.agrees_with_model()
        self.at_most_one_live_attempt_per_step()
        self.attempt_numbers_only_grow()
        self.terminal_runs_schedule_nothing()
        self.active_runs_have_a_live_job()
        self.a_parked_run_holds_no_lease_and_no_job_but_its_timeout()
        self.every_key_has_one_audit_entry()
        self.compensations_run_once_each_latest_completion_first()
        self.a_timed_out_attempt_never_commits_an_outcome()
        self.a_deferral_never_consumes_a_retry()
