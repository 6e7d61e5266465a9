"""What the store contract suites share: workflows, fixed times and small drivers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel
from returns.result import Success

from squidmesh_core.commands import Decision
from squidmesh_core.decide import decide
from squidmesh_core.definition import COMPLETE, WorkflowDefinition
from squidmesh_core.dsl import approval, chain, error, manual, step, wait, wait_for_signal, workflow
from squidmesh_core.events import JobDelivered, RunRequested, StepSucceeded
from squidmesh_core.ids import IdempotencyKey, JobId, LeaseToken, RunId
from squidmesh_core.jsonvalue import JsonObject
from squidmesh_core.ports import Fence, RunStore
from squidmesh_core.state import RunState

T0 = datetime(2026, 2, 1, 9, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)


def _noop(data: object, ctx: object) -> dict[str, object]:
    return {}


FLOW: WorkflowDefinition = workflow(
    "contract.flow",
    triggers=[manual()],
    steps=[step("first", _noop), wait("pause", timedelta(minutes=5)), step("last", _noop)],
    transitions=chain("first", "pause", "last", COMPLETE),
)


class _Go(BaseModel):
    code: str
    weight: float = 0.0


PEOPLE: WorkflowDefinition = workflow(
    "contract.people",
    triggers=[manual()],
    steps=[
        approval("review"),
        wait_for_signal("go", "go", payload=_Go, timeout=timedelta(hours=1)),
        step("last", _noop),
    ],
    transitions=[*chain("review", "go", "last", COMPLETE), error("review", COMPLETE)],
)
OTHER: WorkflowDefinition = workflow(
    "contract.other",
    triggers=[manual()],
    steps=[step("only", _noop)],
    transitions=chain("only", COMPLETE),
)


def run_id(n: int) -> RunId:
    return RunId(f"00000000-0000-4000-8000-{n:012d}")


def new_run(
    n: int, *, at: datetime = T0, key: str | None = None, definition: WorkflowDefinition = FLOW
) -> Decision:
    return decide(
        definition,
        None,
        RunRequested(
            run_id=run_id(n),
            payload={},
            idempotency_key=None if key is None else IdempotencyKey(key),
        ),
        now=at,
    ).unwrap()


class Tokens:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> LeaseToken:
        self.n += 1
        return LeaseToken(f"token-{self.n}")


async def claim(
    store: RunStore, at: datetime, limit: int = 10, mint: Callable[[], LeaseToken] | None = None
) -> list[JobId]:
    claims = await store.claim_due(
        now=at, limit=limit, lease_for=LEASE, owner="contract", mint=mint or Tokens()
    )
    return [c.job_id for c in claims]


async def committed(store: RunStore, decision: Decision, fence: Fence | None = None) -> RunState:
    result = await store.commit(decision, fence=fence)
    assert result == Success(None), result
    return decision.state


async def deliver(
    store: RunStore,
    state: RunState,
    at: datetime,
    *,
    definition: WorkflowDefinition = FLOW,
    worker: str | None = None,
) -> tuple[RunState, LeaseToken]:
    """Claim the one due job and commit its delivery (to ``worker``) at ``at``."""
    claims = await store.claim_due(
        now=at, limit=1, lease_for=LEASE, owner="contract", mint=Tokens()
    )
    assert len(claims) == 1
    token = claims[0].lease_token
    delivered = JobDelivered(job_id=claims[0].job_id, lease_token=token, worker=worker)
    decision = decide(definition, state, delivered, now=at).unwrap()
    fence = Fence(job_id=claims[0].job_id, lease_token=token)
    return await committed(store, decision, fence), token


async def first_succeeded(store: RunStore, output: JsonObject | None = None) -> RunState:
    """Run 1 created, its ``first`` step delivered and succeeded at T0: ``pause`` is due."""
    state = await committed(store, new_run(1))
    state, token = await deliver(store, state, T0)
    first = JobId(f"{state.id}/first/1")
    succeeded = StepSucceeded(job_id=first, lease_token=token, output=output or {})
    done = decide(FLOW, state, succeeded, now=T0).unwrap()
    return await committed(store, done, Fence(job_id=first, lease_token=token))
