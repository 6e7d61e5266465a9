"""The runtime over every store, against the reference model, with delivery faults.

Each example generates a workflow, starts one run, and then interleaves:
claims (the dispatcher), deliveries of any claim ever made (so duplicates and
stale messages happen naturally), lost messages, workers that crash mid-step,
released leases, clock jumps in both directions and cancels. The reference
model predicts which jobs each claim returns, what each delivery amounts to,
and the run's state; every rule checks the runtime agrees.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from returns.result import Failure, Success

from squidmesh_backends.memory import MemoryRunStore
from squidmesh_backends.postgres import PostgresRunStore
from squidmesh_backends.runtime import FakeClock, JobOutcome, Runtime, RuntimeSettings, SequenceIds
from squidmesh_backends.sqlite import SqliteRunStore
from squidmesh_core import (
    AttemptStatus,
    Recheck,
    RunId,
    StepContext,
    StepFailure,
    WorkflowDefinition,
    build_workflow,
)
from squidmesh_core.errors import IdempotencyKeyReused
from squidmesh_core.ports import RunStore
from squidmesh_core.protocol import JobId, LeaseToken, StepKind
from squidmesh_core.state import RunState
from squidmesh_core.testing.reference import ReferenceModel, ReferenceRun
from squidmesh_core.testing.strategies import BASE_TIME, workflows
from tests.lookbehind import job_rows
from tests.services import drop_schema, migrated_schema, require_postgres, truncate

pytestmark = pytest.mark.slow

LEASE = timedelta(seconds=30)
KEYS = st.none() | st.sampled_from(["k1", "k2"])
PLANS = ("ok", "ok", "ok", "fail", "fatal", "crash", "defer")
RECHECK = timedelta(minutes=5)


class Script:
    """What the next attempt of each (step, attempt) does, chosen by the machine."""

    def __init__(self) -> None:
        self.plan: dict[tuple[str, int], str] = {}
        self.entered = asyncio.Event()

    async def __call__(self, data: dict[str, object], ctx: StepContext) -> object:
        action = self.plan.get((ctx.step, ctx.attempt), "ok")
        if action == "crash":
            self.entered.set()
            await asyncio.Event().wait()
        if action == "fail":
            raise RuntimeError(f"{ctx.step} attempt {ctx.attempt} failed")
        if action == "fatal":
            from returns.result import Failure

            return Failure(StepFailure(kind="fatal", message="no retry", retryable=False))
        if action == "defer":
            return Recheck(after=RECHECK, reason="not yet")
        return {"out": f"{ctx.step}#{ctx.attempt}"}


def scripted(definition: WorkflowDefinition, script: Script) -> WorkflowDefinition:
    # Step timeouts run on real time in the worker, not on the machine's fake clock:
    # the core machine and tests/runtime/test_step_timeouts.py cover them.
    steps = [
        replace(
            s, handler=script, timeout=None, compensate=None if s.compensate is None else script
        )
        if s.kind is StepKind.ACTION
        else s
        for s in definition.steps
    ]
    return build_workflow(
        definition.name,
        triggers=definition.triggers,
        steps=steps,
        transitions=definition.transitions,
        compensate_on_cancel=definition.compensate_on_cancel,
    ).unwrap()


class RuntimeMachine(RuleBasedStateMachine):
    store_kind = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.Runner()
        self.folder = tempfile.TemporaryDirectory(prefix="squidmesh-machine-")
        self.claims: list[tuple[JobId, LeaseToken]] = []
        self.leases: dict[str, tuple[str, object]] = {}

    def teardown(self) -> None:
        try:
            if hasattr(self, "run_id"):
                self.drain()
        finally:
            store = getattr(self, "store", None)
            if isinstance(store, SqliteRunStore | PostgresRunStore):
                self.loop.run(store.close())
            self.loop.close()
            self.folder.cleanup()

    # -- set-up --------------------------------------------------------------------------

    @initialize(definition=workflows(jitter=False, people=True))
    def start(self, definition: WorkflowDefinition) -> None:
        self.script = Script()
        self.definition = scripted(definition, self.script)
        self.clock = FakeClock(BASE_TIME)
        self.store: RunStore = self.new_store()
        self.runtime = Runtime(
            store=self.store,
            workflows=[self.definition],
            clock=self.clock,
            ids=SequenceIds(),
            settings=RuntimeSettings(lease=LEASE, heartbeat_every=timedelta(seconds=10)),
        )
        run = self.loop.run(self.runtime.start_run(self.definition, {"account": "acc"})).unwrap()
        self.run_id = RunId(run.id)
        self.model = ReferenceModel(self.definition)
        self.run: ReferenceRun = self.model.start(run.id, self.clock.now())

    def new_store(self) -> RunStore:
        if self.store_kind == "memory":
            return MemoryRunStore()
        return SqliteRunStore(Path(self.folder.name) / "m.db")

    # -- helpers -----------------------------------------------------------------------------

    def state(self) -> RunState:
        state = self.loop.run(self.store.load(self.run_id))
        assert state is not None
        return state

    def predict_claims(self, limit: int) -> list[str]:
        """Reclaims first (by lease expiry), then unleased jobs (by due time)."""
        now = self.clock.now()
        ready: list[tuple[int, object, str]] = []
        for job_id, job in self.run.jobs.items():
            lease = self.leases.get(job_id)
            if job.due > now:
                continue
            if lease is None:
                ready.append((1, job.due, job_id))
            elif lease[1] <= now:  # type: ignore[operator]
                ready.append((0, lease[1], job_id))
        return [job_id for _, _, job_id in sorted(ready)[:limit]]

    def kind(self, job_id: str) -> StepKind:
        step = job_id.split("/")[1]
        spec = self.definition.step(step)
        assert spec is not None
        return spec.kind

    # -- rules -------------------------------------------------------------------------------

    @rule(limit=st.integers(min_value=1, max_value=3))
    def dispatcher_claims(self, limit: int) -> None:
        expected = self.predict_claims(limit)
        claims = self.loop.run(
            self.store.claim_due(
                now=self.clock.now(),
                limit=limit,
                lease_for=LEASE,
                owner="m",
                mint=self.runtime.ids.new_lease_token,
            )
        )
        assert [c.job_id for c in claims] == expected
        for c in claims:
            self.leases[c.job_id] = (c.lease_token, c.lease_expires_at)
            self.claims.append((c.job_id, c.lease_token))

    @precondition(lambda self: bool(self.claims))
    @rule(data=st.data(), plan=st.sampled_from(PLANS))
    def worker_delivers(self, data: st.DataObject, plan: str) -> None:
        job_id, token = data.draw(st.sampled_from(self.claims))
        step, attempt = job_id.split("/")[1], int(job_id.split("/")[2])
        if self.kind(job_id) is not StepKind.ACTION:
            plan = "ok"
        self.script.plan[(step, attempt)] = plan
        expected = self.predict_delivery(job_id, token, plan)
        assert self.loop.run(self._deliver(job_id, token)) == expected

    async def _deliver(self, job_id: str, token: str) -> str:
        """Deliver one message; a step that blocks (a crashing worker) is killed mid-step."""
        self.script.entered.clear()
        task = asyncio.create_task(self.runtime.worker.execute_job(job_id, token, heartbeat=False))
        entered = asyncio.create_task(self.script.entered.wait())
        await asyncio.wait({task, entered}, return_when=asyncio.FIRST_COMPLETED)
        entered.cancel()
        if task.done():
            return task.result().value
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return "started"

    def predict_delivery(self, job_id: str, token: str, plan: str) -> str:
        """Apply the delivery to the model and return the JobOutcome value it must produce."""
        job = self.run.jobs.get(job_id)
        lease = self.leases.get(job_id)
        if job is None or lease is None or lease[0] != token:
            return JobOutcome.STALE.value
        if job.token is not None:
            if job.token == token:
                return JobOutcome.STALE.value
            return self.predict_reclaim(job_id, job.token, token)
        return self.predict_start(job_id, token, plan)

    def predict_reclaim(self, job_id: str, lost_token: str, token: str) -> str:
        """A reclaim records the attempt lost and starts the retry due now, if any, at once."""
        before = set(self.run.jobs)
        now = self.clock.now()
        assert self.model.fail(
            self.run, job_id, lost_token, retryable=True, retry_after=None, now=now, lost=True
        )
        self.leases.pop(job_id, None)
        due = [j for j, job in self.run.jobs.items() if j not in before and job.due <= now]
        assert len(due) <= 1, due
        if not due or self.run.status not in ("running", "retrying"):
            return JobOutcome.RECLAIMED.value
        handed = due[0]
        self.leases[handed] = (token, now + LEASE)
        step, attempt = handed.split("/")[1], int(handed.split("/")[2])
        return self.predict_start(handed, token, self.script.plan.get((step, attempt), "ok"))

    def predict_start(self, job_id: str, token: str, plan: str) -> str:
        """The attempt of ``job_id`` starts under ``token`` and goes as ``plan`` says."""
        if self.kind(job_id) is not StepKind.ACTION:
            plan = "ok"
        assert self.model.deliver(self.run, job_id, token, self.clock.now())
        if job_id not in self.run.jobs:
            self.leases.pop(job_id, None)
            return JobOutcome.CONVERGED.value
        self.leases[job_id] = (token, self.clock.now() + LEASE)  # renewed by the start
        if plan == "crash":
            return "started"
        step, attempt = job_id.split("/")[1], int(job_id.split("/")[2])
        self.leases.pop(job_id, None)
        if plan == "defer":
            assert self.model.defer(self.run, job_id, token, RECHECK, self.clock.now())
            return JobOutcome.DEFERRED.value
        if plan == "ok":
            output: dict[str, object] = (
                {"out": f"{step}#{attempt}"} if self.kind(job_id) is StepKind.ACTION else {}
            )
            assert self.model.succeed(self.run, job_id, token, output, self.clock.now())
            return JobOutcome.SUCCEEDED.value
        assert self.model.fail(
            self.run,
            job_id,
            token,
            retryable=plan == "fail",
            retry_after=None,
            now=self.clock.now(),
        )
        return JobOutcome.FAILED.value

    @precondition(lambda self: bool(self.claims))
    @rule(data=st.data())
    def worker_releases_on_shutdown(self, data: st.DataObject) -> None:
        job_id, token = data.draw(st.sampled_from(self.claims))
        held = self.leases.get(job_id)
        released = self.loop.run(self.store.release(job_id, token))
        assert released == (held is not None and held[0] == token and job_id in self.run.jobs)
        if released:
            self.leases.pop(job_id)

    @rule(seconds=st.integers(min_value=-120, max_value=3 * 3600))
    def clock_jumps(self, seconds: int) -> None:
        self.clock.advance(timedelta(seconds=seconds))

    @rule()
    def a_lease_runs_out(self) -> None:
        """The most common real fault: a worker goes quiet for a whole lease."""
        self.clock.advance(LEASE)

    @rule(roll=st.integers(min_value=0, max_value=5), key=KEYS)
    def someone_cancels(self, roll: int, key: str | None) -> None:
        if roll:
            return
        self.command("cancel", key)

    @rule(command=st.sampled_from(["unblock", "approve", "reject"]), key=KEYS)
    def a_person_acts(self, command: str, key: str | None) -> None:
        self.command(command, key)

    @rule(key=KEYS)
    def another_system_signals(self, key: str | None) -> None:
        self.command("signal", key)

    def command(self, command: str, key: str | None) -> None:
        """An operator command through the API, predicted by the model."""
        rt, run_id = self.runtime, self.run_id
        calls = {
            "cancel": lambda: rt.cancel_run(run_id, actor="ana", idempotency_key=key),
            "unblock": lambda: rt.unblock_run(run_id, actor="ana", idempotency_key=key),
            "approve": lambda: rt.approve_run(run_id, actor="ana", idempotency_key=key),
            "reject": lambda: rt.reject_run(run_id, actor="ana", idempotency_key=key),
            "signal": lambda: rt.send_signal(run_id, "go", {"code": "c"}, idempotency_key=key),
        }
        now = self.clock.now()
        result = self.loop.run(calls[command]())
        has_signal = any(s.kind is StepKind.SIGNAL for s in self.definition.steps)
        payload: dict[str, object] | None = {"code": "c"} if has_signal else None
        before = set(self.run.jobs)
        expected = self.model.command(
            self.run, command, key=key, actor="ana", note=None, now=now, payload=payload
        )
        for gone in before - set(self.run.jobs):
            self.leases.pop(gone, None)
        match result:
            case Success(run):
                assert run.receipt is not None
                assert expected == ("repeated" if run.receipt.repeated else "accepted")
            case Failure(IdempotencyKeyReused()):
                assert expected == "reused"
            case Failure(_):
                assert expected == "refused", (expected, result)

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def store_agrees_with_the_model(self) -> None:
        if not hasattr(self, "run_id"):
            return
        state = self.state()
        assert state.status.value == self.run.status
        assert {s.step: s.status.value for s in state.steps} == self.run.steps
        assert {
            s.step: [a.status.value for a in s.attempts] for s in state.steps
        } == self.run.attempts
        assert {j.id: j.lease_token for j in state.jobs} == {
            k: v.token for k, v in self.run.jobs.items()
        }
        assert dict(state.context) == self.run.context
        assert [(e.command.value, e.idempotency_key) for e in state.audit] == self.run.audit
        assert [(dict(s.payload), s.consumed_by) for s in state.signals] == self.run.inbox
        rows = self.loop.run(job_rows(self.store))
        assert set(rows) == set(self.run.jobs)
        for job_id, (due, token) in rows.items():
            assert due == self.run.jobs[job_id].due
            lease = self.leases.get(job_id)
            assert token == (None if lease is None else lease[0])

    @invariant()
    def at_most_one_live_attempt_and_complete_history(self) -> None:
        if not hasattr(self, "run_id"):
            return
        for step in self.state().steps:
            running = [a for a in step.attempts if a.status is AttemptStatus.RUNNING]
            assert len(running) <= 1
            assert [a.number for a in step.attempts] == list(range(1, len(step.attempts) + 1))
            for a in step.attempts:
                assert (a.finished_at is None) == (a.status is AttemptStatus.RUNNING)

    # -- the end ------------------------------------------------------------------------------

    def drain(self) -> None:
        """Run everything to the end with healthy workers: every run must finish."""
        for _ in range(300):
            if self.run.status in ("failed", "completed", "cancelled") and not self.run.jobs:
                return
            if self.run.status == "paused" and not self.run.jobs:
                parked = next(s for s, status in self.run.steps.items() if status == "parked")
                kind = self.model.parks[parked]
                self.command({"pause": "unblock", "approval": "approve"}.get(kind, "signal"), None)
                self.store_agrees_with_the_model()
                continue
            upcoming = self.loop.run(self.store.next_due_at())
            assert upcoming is not None, f"{self.run.status} run has nothing left to run"
            self.clock.set(max(upcoming, self.clock.now()))
            self.claims = []
            self.dispatcher_claims(3)
            for job_id, token in list(self.claims):
                self.script.plan[(job_id.split("/")[1], int(job_id.split("/")[2]))] = "ok"
                expected = self.predict_delivery(job_id, token, "ok")
                outcome = self.loop.run(
                    self.runtime.worker.execute_job(job_id, token, heartbeat=False)
                )
                assert outcome.value == expected
            self.store_agrees_with_the_model()
        raise AssertionError("the run did not finish")


RuntimeMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=30,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestRuntimeOverMemory = pytest.mark.timeout(900)(RuntimeMachine.TestCase)


class SqliteRuntimeMachine(RuntimeMachine):
    store_kind = "sqlite"


SqliteRuntimeMachine.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=25,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestRuntimeOverSqlite = pytest.mark.slow(pytest.mark.timeout(900)(SqliteRuntimeMachine.TestCase))


class PostgresRuntimeMachine(RuntimeMachine):
    """The same machine over PostgreSQL: one migrated schema, emptied before each example."""

    store_kind = "postgres"
    dsn = ""
    schema = ""

    def new_store(self) -> RunStore:
        truncate(self.dsn, self.schema)
        return PostgresRunStore(self.dsn, schema=self.schema, clock="caller", max_size=2)


@pytest.fixture(scope="module")
def postgres_machine_schema() -> Iterator[None]:
    dsn = require_postgres()
    schema = asyncio.run(migrated_schema(dsn))
    PostgresRuntimeMachine.dsn, PostgresRuntimeMachine.schema = dsn, schema
    yield
    drop_schema(dsn, schema)


PostgresRuntimeMachine.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=25,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestRuntimeOverPostgres = pytest.mark.usefixtures("postgres_machine_schema")(
    pytest.mark.postgres(
        pytest.mark.slow(pytest.mark.timeout(900)(PostgresRuntimeMachine.TestCase))
    )
)
