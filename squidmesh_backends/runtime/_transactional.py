"""Transactional steps on the worker: the step runs inside the store's transaction.

Rules (the store side is in each store's ``_transaction`` module):

1. **Only a success commits the step's writes.** The step runs with
   ``ctx.transaction``; if it succeeds, its outcome is decided on the run as
   the transaction sees it (row locked) and committed with the writes, in one
   transaction. A failure, a re-check, a time-out or a cancelled attempt rolls
   the writes back; its outcome is then recorded as usual.
2. **A success the core does not record as one is rolled back.** When the
   decision does not mark this attempt succeeded (it ran past its timeout, so
   the core records ``timed_out``), the writes are dropped and the outcome is
   recorded as usual, so a timed-out attempt never commits anything.
3. **A refused commit writes nothing.** A lease another worker took, or a run
   that no longer has the attempt, rolls everything back (``refused``).
4. **Stores that cannot** (the memory store, an in-memory SQLite database)
   make the attempt fail once, as ``invalid_step``: no retry can help.
5. **A transaction the step broke fails the attempt.** A success whose
   transaction can no longer commit (PostgreSQL after an error the step caught;
   SQLite after the step ended the transaction itself) is recorded as a
   ``transaction_aborted`` failure, retried per the step's policy.
6. **A stopped step cannot write afterwards.** A step that timed out (or was
   cancelled by a stopping worker) may still be running; its transaction is
   *abandoned*: the store makes sure nothing it does later is written.
7. **No transaction, no attempt.** When none can be begun (SQLite's write lock
   held past its busy timeout by another transactional step, PostgreSQL out of
   connections), the attempt fails as ``transaction_unavailable``, retried per
   the step's policy, before the step runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from returns.result import Failure, Result, Success

from squidmesh_backends.errors import BackendError, ConfigurationError
from squidmesh_backends.runtime.steps import StepOutcome
from squidmesh_core.commands import Decision
from squidmesh_core.context import Recheck, StepContext
from squidmesh_core.errors import CommitError, NotFound, Rejected, StaleDelivery
from squidmesh_core.ports import Fence, RunStore, StepTransaction, TransactionalStore
from squidmesh_core.state import TIMED_OUT, AttemptStatus, RunState, StepFailure


@dataclass(frozen=True, slots=True)
class InTransaction:
    """What a transactional attempt amounted to."""

    result: StepOutcome
    decision: Decision | None = None
    """The outcome committed with the step's writes (rule 1)."""
    refused: Rejected | CommitError | NotFound | None = None
    """Why the success was not committed (rule 3); ``None`` when it was, or failed."""


def _succeeded(decision: Decision, step: str, number: int) -> bool:
    step_run = decision.state.step_run(step)
    return step_run is not None and any(
        a.number == number and a.status is AttemptStatus.SUCCEEDED for a in step_run.attempts
    )


async def run_in_transaction(
    store: RunStore,
    ctx: StepContext,
    run: Callable[[StepContext], Awaitable[StepOutcome]],
    decide_success: Callable[[RunState, object], Result[Decision, Rejected]],
    *,
    fence: Fence,
) -> InTransaction:
    """Run one attempt of a ``transaction=True`` step (see the module rules)."""
    opener = getattr(store, "step_transaction", None)
    if opener is None:  # rule 4
        return InTransaction(_cannot(f"the {type(store).__name__} cannot hold a transaction"))
    transactional: TransactionalStore = store  # type: ignore[assignment]  # it has the method
    try:
        async with contextlib.AsyncExitStack() as stack:
            try:
                txn = await stack.enter_async_context(transactional.step_transaction())
            except BackendError as exc:  # rule 7: e.g. SQLite's write lock stayed taken
                return InTransaction(_unavailable(exc))
            try:
                result = await run(replace(ctx, transaction=txn.connection))
            except BaseException:  # the worker is stopping: the step may run on
                txn.abandon()
                raise
            if isinstance(result, Failure) and result.failure().kind == TIMED_OUT:
                txn.abandon()  # rule 6: stopped, but it may still run
                return InTransaction(result)
            if not isinstance(result, Success) or isinstance(result.unwrap(), Recheck):
                return InTransaction(result)  # rule 1: rolled back on the way out
            if txn.aborted:  # rule 5
                return InTransaction(_aborted(ctx))
            return await _commit(txn, ctx, result, decide_success, fence)
    except ConfigurationError as exc:  # rule 4
        return InTransaction(_cannot(str(exc)))


async def _commit(
    txn: StepTransaction,
    ctx: StepContext,
    result: StepOutcome,
    decide_success: Callable[[RunState, object], Result[Decision, Rejected]],
    fence: Fence,
) -> InTransaction:
    output = result.unwrap()

    def decide_on(current: RunState) -> Result[Decision, Rejected]:
        decided = decide_success(current, output)
        if isinstance(decided, Success) and not _succeeded(decided.unwrap(), ctx.step, ctx.attempt):
            return Failure(StaleDelivery(job_id=fence.job_id, reason="timed_out"))  # rule 2
        return decided

    committed = await txn.commit_outcome(ctx.run_id, decide_on, fence=fence)
    if isinstance(committed, Failure):
        return InTransaction(result, refused=committed.failure())
    return InTransaction(result, decision=committed.unwrap())


def _failed(kind: str, message: str, *, retryable: bool) -> StepOutcome:
    return Failure(StepFailure(kind=kind, message=message, retryable=retryable))


def _unavailable(exc: BackendError) -> StepOutcome:
    why = f"no transaction could be begun for the step: {exc}"
    return _failed("transaction_unavailable", why, retryable=True)


def _aborted(ctx: StepContext) -> StepOutcome:
    why = (
        f"step {ctx.step!r} succeeded, but a database error it caught (or a COMMIT or "
        "ROLLBACK it sent) ended its transaction; its outcome was not committed with its "
        "writes (rolled back, unless it committed them itself)"
    )
    return _failed("transaction_aborted", why, retryable=True)


def _cannot(why: str) -> StepOutcome:
    why = f"a transactional step needs the SQLite or PostgreSQL store: {why}"
    return _failed("invalid_step", why, retryable=False)


def timed_out(refused: object) -> bool:
    """Whether a refused commit was a success the core records as ``timed_out`` (rule 2)."""
    return isinstance(refused, StaleDelivery) and refused.reason == "timed_out"
