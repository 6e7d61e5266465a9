"""Drive a run through the pure core by hand: every state change is a value."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from squidmesh_core import COMPLETE, RunId, chain, manual, step, wait, workflow
from squidmesh_core.protocol import JobDelivered, LeaseToken, RunRequested, StepSucceeded, decide


def greet(data: object, ctx: object) -> dict[str, str]:
    return {"greeting": "hello"}


hello = workflow(
    "demo.hello",
    triggers=[manual()],
    steps=[wait("pause", timedelta(hours=6)), step("greet", greet)],
    transitions=chain("pause", "greet", COMPLETE),
)

now = datetime(2026, 1, 1, tzinfo=UTC)
run = (
    decide(
        hello,
        None,
        RunRequested(run_id=RunId("00000000-0000-4000-8000-00000000abcd"), payload={}),
        now=now,
    )
    .unwrap()
    .state
)
while not run.status.terminal:
    job = run.jobs[0]
    now = max(now, job.due_at)
    run = (
        decide(hello, run, JobDelivered(job_id=job.id, lease_token=LeaseToken("t")), now=now)
        .unwrap()
        .state
    )
    run = (
        decide(
            hello,
            run,
            StepSucceeded(job_id=job.id, lease_token=LeaseToken("t"), output={}),
            now=now,
        )
        .unwrap()
        .state
    )
    print(f"{now:%H:%M} {job.step} done -> run {run.status}")
