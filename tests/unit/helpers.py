"""Small drivers that make decide-level tests read like stories."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from returns.result import Failure, Result, Success

from squidmesh_core import RunId, RunStatus, StepFailure, WorkflowDefinition
from squidmesh_core.protocol import (
    Decision,
    Event,
    JobDelivered,
    JobId,
    JobStatus,
    LeaseExpired,
    LeaseToken,
    Rejected,
    RunRequested,
    RunState,
    StepFailed,
    StepSucceeded,
    decide,
)

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
RUN = RunId("0b0e6c1e-2f2e-4c1a-9d55-7b1d2f0e9a10")
OTHER_RUN = RunId("1b0e6c1e-2f2e-4c1a-9d55-7b1d2f0e9a10")


def handler(data: object, ctx: object) -> dict[str, object]:
    return {}


class Driver:
    """Holds one run and applies events to it, keeping the last decision."""

    def __init__(
        self, definition: WorkflowDefinition, payload: object = None, **kw: object
    ) -> None:
        self.definition = definition
        self.now = T0
        self.tokens = 0
        started = decide(
            definition,
            None,
            RunRequested(run_id=RUN, payload={} if payload is None else payload, **kw),  # type: ignore[arg-type]
            now=self.now,
        )
        self.decision: Decision = started.unwrap()
        self.state: RunState = self.decision.state

    def status(self) -> RunStatus:
        return self.state.status

    def advance(self, delta: timedelta) -> None:
        self.now += delta

    def send(self, event: Event) -> Result[Decision, Rejected]:
        result = decide(self.definition, self.state, event, now=self.now)
        if isinstance(result, Success):
            self.decision = result.unwrap()
            self.state = self.decision.state
        return result

    def accept(self, event: Event) -> Decision:
        result = self.send(event)
        assert isinstance(result, Success), result
        decision: Decision = result.unwrap()
        return decision

    def reject(self, event: Event) -> Rejected:
        result = self.send(event)
        assert isinstance(result, Failure), result
        rejected: Rejected = result.failure()
        return rejected

    def job(self, step: str | None = None) -> JobId:
        jobs = [j for j in self.state.jobs if step is None or j.step == step]
        assert len(jobs) == 1, jobs
        return jobs[0].id

    def token_of(self, job_id: JobId) -> LeaseToken:
        job = self.state.job(job_id)
        assert job is not None and job.lease_token is not None
        return job.lease_token

    def deliver(self, step: str | None = None, *, worker: str | None = None) -> JobId:
        job_id = self.job(step)
        self.tokens += 1
        token = LeaseToken(f"t{self.tokens}")
        self.accept(JobDelivered(job_id=job_id, lease_token=token, worker=worker))
        return job_id

    def succeed(self, step: str | None = None, output: object = None) -> Decision:
        job_id = self.job(step)
        return self.accept(
            StepSucceeded(job_id=job_id, lease_token=self.token_of(job_id), output=output or {})
        )

    def fail(self, step: str | None = None, failure: StepFailure | None = None) -> Decision:
        job_id = self.job(step)
        return self.accept(
            StepFailed(
                job_id=job_id,
                lease_token=self.token_of(job_id),
                failure=failure or StepFailure(kind="step_failed", message="boom"),
            )
        )

    def expire(self, step: str | None = None) -> Decision:
        job_id = self.job(step)
        return self.accept(LeaseExpired(job_id=job_id, lease_token=self.token_of(job_id)))

    def run_step(self, step: str | None = None, output: object = None) -> Decision:
        self.deliver(step)
        return self.succeed(step, output)

    def scheduled(self) -> list[tuple[str, int, datetime]]:
        return sorted(
            (j.step, j.attempt, j.due_at)
            for j in self.state.jobs
            if j.status is JobStatus.SCHEDULED
        )
