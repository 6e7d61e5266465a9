"""``Client``: start, inspect, explain, list and command runs with nothing but a store.

A client never claims or runs a step. Web handlers, CLI commands and scripts use
it alone; a :class:`~squidmesh_backends.runtime.worker.Worker` (started only in
worker processes) does the executing, and :class:`~squidmesh_backends.Runtime`
composes the two in one process. Every method returns a ``Result``: expected
refusals are values; infrastructure faults raise ``BackendError``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import datetime, timedelta
from typing import TypeAlias

from returns.result import Failure, Result, Success

from squidmesh_backends.errors import ContentionError
from squidmesh_backends.runtime._doorbell import Doorbell
from squidmesh_backends.runtime._ledger import Ledger, Publisher
from squidmesh_backends.runtime._maintenance import listing, prune_runs, store_status
from squidmesh_backends.runtime._registry import Registry
from squidmesh_backends.runtime.clock import SystemClock
from squidmesh_backends.runtime.ids import RandomIds
from squidmesh_backends.runtime.settings import RuntimeSettings
from squidmesh_core.cron import CRON_KEY_PREFIX
from squidmesh_core.decide import REPLAY_KEY_PREFIX, decide, replay_key
from squidmesh_core.definition import WorkflowDefinition
from squidmesh_core.errors import (
    CommandRefused,
    DuplicateRun,
    IdempotencyKeyReused,
    InvalidOption,
    InvalidPayload,
    InvalidRunId,
    NotFound,
    RepeatedCommand,
    UnknownStep,
    UnknownTrigger,
    UnknownWorkflow,
    UnsafeReplay,
)
from squidmesh_core.events import (
    ApproveRequested,
    CancelRequested,
    Operator,
    OperatorEvent,
    RejectRequested,
    ReplayRequested,
    RunRequested,
    SignalSent,
    UnblockRequested,
)
from squidmesh_core.explain import Explanation, explain
from squidmesh_core.ids import IdempotencyKey, RunId, parse_run_id
from squidmesh_core.jsonvalue import EMPTY_OBJECT, JsonObject, storable_text_problem
from squidmesh_core.operations import PruneReport, StoreStatus
from squidmesh_core.ports import Clock, EventSink, IdSource, RunStore
from squidmesh_core.state import AuditEntry, RunState, RunStatus
from squidmesh_core.views import Receipt, Run, run_view

StartError: TypeAlias = UnknownWorkflow | UnknownTrigger | InvalidPayload | InvalidOption
LookupError_: TypeAlias = InvalidRunId | NotFound
CommandError: TypeAlias = InvalidRunId | NotFound | UnknownWorkflow | CommandRefused
"""Why an operator command (cancel, unblock, approve, reject, signal) was refused."""
CancelError: TypeAlias = CommandError
ReplayError: TypeAlias = (
    InvalidRunId
    | NotFound
    | UnknownWorkflow
    | UnknownTrigger
    | InvalidPayload
    | InvalidOption
    | UnsafeReplay
    | UnknownStep
    | IdempotencyKeyReused
)
ListError: TypeAlias = InvalidOption
_RESERVED_KEYS = (CRON_KEY_PREFIX, REPLAY_KEY_PREFIX)

MAX_LIST_LIMIT = 1000
MAX_NAME = 200


def _clean_name(value: object) -> bool:
    """A non-empty name of at most ``MAX_NAME`` characters that every store can hold."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_NAME
        and storable_text_problem(value) is None
    )


class Client:
    """The use cases of SquidMesh over a store (see the module docstring).

    Args:
        store: where runs live (the only source of truth).
        workflows: the workflows this client may start and command.
        clock, ids: sources of time and ids (system ones by default).
        sinks: event subscribers, called after each commit.
        settings: conflict retries and the like.
        doorbell: rung when a commit makes work due now; a worker in the same
            process shares it so its dispatcher wakes at once.
    """

    def __init__(
        self,
        *,
        store: RunStore,
        workflows: Iterable[WorkflowDefinition],
        clock: Clock | None = None,
        ids: IdSource | None = None,
        sinks: Sequence[EventSink] = (),
        settings: RuntimeSettings | None = None,
        doorbell: Doorbell | None = None,
    ) -> None:
        self.store = store
        self.registry = Registry(workflows)
        self.clock = clock or SystemClock()
        self.ids = ids or RandomIds()
        self.settings = settings or RuntimeSettings()
        self.publisher = Publisher(sinks)
        self.doorbell = doorbell or Doorbell()
        self.ledger = Ledger(
            store=store,
            clock=self.clock,
            settings=self.settings,
            publisher=self.publisher,
            doorbell=self.doorbell,
        )

    @property
    def workflows(self) -> dict[str, WorkflowDefinition]:
        """Registered workflows by name."""
        return self.registry.as_dict()

    async def start_run(
        self,
        workflow: str | WorkflowDefinition,
        payload: object,
        *,
        trigger: str | None = None,
        idempotency_key: str | None = None,
        deadline: timedelta | None = None,
    ) -> Result[Run, StartError]:
        """Validate the payload and start a run (nothing is stored if it is invalid).

        ``deadline`` (instead of the workflow's): a run not finished this long
        after it starts fails with ``deadline_exceeded``.

        Returns:
            ``Success(Run)`` (``run.existing`` is true when an earlier run with the
            same idempotency key is returned), or ``Failure`` with
            ``UnknownWorkflow``, ``UnknownTrigger``, ``InvalidPayload`` or
            ``InvalidOption`` (a malformed or reserved idempotency key).
        """
        return await self._start(
            workflow,
            payload,
            trigger=trigger,
            idempotency_key=idempotency_key,
            cron=False,
            deadline=deadline,
        )

    async def start_cron_run(
        self,
        workflow: str | WorkflowDefinition,
        payload: object,
        *,
        trigger: str | None,
        idempotency_key: str | None,
        context: JsonObject = EMPTY_OBJECT,
    ) -> Result[Run, StartError]:
        """``start_run`` for the cron loop: reserved ``cron:`` keys and schedule context allowed."""
        return await self._start(
            workflow,
            payload,
            trigger=trigger,
            idempotency_key=idempotency_key,
            context=context,
            cron=True,
        )

    async def _start(
        self,
        workflow: str | WorkflowDefinition,
        payload: object,
        *,
        trigger: str | None,
        idempotency_key: str | None,
        context: JsonObject = EMPTY_OBJECT,
        cron: bool,
        deadline: timedelta | None = None,
    ) -> Result[Run, StartError]:
        found = self.registry.lookup(workflow)
        if deadline is not None and (
            not isinstance(deadline, timedelta) or deadline <= timedelta(0)
        ):
            return Failure(InvalidOption(option="deadline", reason="must be a positive timedelta"))
        if isinstance(found, Failure):
            return found
        definition = found.unwrap()
        if idempotency_key is not None and not _clean_name(idempotency_key):
            return Failure(
                InvalidOption(
                    option="idempotency_key",
                    reason=f"must be a non-empty string of at most {MAX_NAME} characters "
                    "without NUL or lone surrogates",
                )
            )
        if (
            not cron
            and isinstance(idempotency_key, str)
            and idempotency_key.startswith(_RESERVED_KEYS)
        ):
            return Failure(
                InvalidOption(
                    option="idempotency_key",
                    reason=f"keys beginning with {CRON_KEY_PREFIX!r} or {REPLAY_KEY_PREFIX!r} "
                    "belong to cron triggers and replays",
                )
            )
        key = None if idempotency_key is None else IdempotencyKey(idempotency_key)
        if key is not None:
            existing = await self.store.find_by_idempotency_key(definition.name, key)
            if existing is not None:
                return Success(run_view(existing, existing=True))
        event = RunRequested(
            run_id=self.ids.new_run_id(),
            payload=payload,
            trigger=trigger,
            idempotency_key=key,
            context=context,
            deadline=deadline,
        )
        decided = decide(definition, None, event, now=self.clock.now())
        if isinstance(decided, Failure):
            problem = decided.failure()
            assert isinstance(problem, UnknownTrigger | InvalidPayload)  # a new run's refusals
            return Failure(problem)
        decision = decided.unwrap()
        committed = await self.store.commit(decision)
        if isinstance(committed, Failure):
            clash = committed.failure()
            if isinstance(clash, DuplicateRun) and clash.existing_run_id != decision.state.id:
                winner = await self.store.load(RunId(clash.existing_run_id))
                if winner is not None:
                    return Success(run_view(winner, existing=True))
            raise ContentionError(f"could not create run {decision.state.id}: {clash}")
        self.ledger.committed(decision)
        return Success(run_view(decision.state))

    async def inspect_run(
        self, run_id: str, *, include_history: bool = False
    ) -> Result[Run, LookupError_]:
        """The run, optionally with its step runs and attempts (``InvalidRunId``, ``NotFound``)."""
        parsed = parse_run_id(run_id)
        if isinstance(parsed, Failure):
            return parsed
        state = await self.store.load(parsed.unwrap())
        if state is None:
            return Failure(NotFound(run_id=run_id))
        return Success(run_view(state, include_history=include_history))

    async def list_runs(
        self,
        *,
        workflow: str | WorkflowDefinition | None = None,
        status: RunStatus | str | None = None,
        limit: int = 50,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        after: str | None = None,
    ) -> Result[tuple[Run, ...], ListError]:
        """Runs, newest first, filtered by workflow, status and creation time (``InvalidOption``).

        ``created_after`` and ``created_before`` (timezone-aware) keep runs created
        at or after the one and strictly before the other. ``after`` pages:
        pass the id of the last run of the previous page to get the runs after it
        in this order (strictly older), until a page comes back short.
        """
        name = workflow.name if isinstance(workflow, WorkflowDefinition) else workflow
        if name is not None and not _clean_name(name):
            return Failure(InvalidOption(option="workflow", reason="must be a workflow name"))
        query = await listing(
            self.store,
            limit=limit,
            max_limit=MAX_LIST_LIMIT,
            status=status,
            created_after=created_after,
            created_before=created_before,
            after=after,
        )
        if isinstance(query, Failure):
            return query
        states = await self.store.list_runs(workflow=name, **query.unwrap())
        return Success(tuple(run_view(s) for s in states))

    async def store_status(
        self,
        *,
        expiring_within: timedelta = timedelta(seconds=30),
        workers_within: timedelta = timedelta(minutes=5),
    ) -> StoreStatus:
        """The store at a glance, now: runs by workflow and status, due jobs, leases, workers.

        Leases ending within ``expiring_within`` count as expiring; workers seen
        within ``workers_within`` are listed, most recent first.
        """
        return await store_status(
            self.store, self.clock, expiring_within=expiring_within, workers_within=workers_within
        )

    async def prune_runs(
        self,
        *,
        older_than: timedelta,
        statuses: Collection[RunStatus | str] | None = None,
        batch_size: int = 500,
        dry_run: bool = False,
        on_batch: Callable[[int], None] | None = None,
    ) -> Result[PruneReport, InvalidOption]:
        """Delete finished runs last updated more than ``older_than`` ago, with their history.

        ``statuses`` defaults to ``completed``, ``cancelled`` and ``failed``
        (``compensation_failed`` runs wait for a person unless named); any status
        that is not finished is refused. The newest tick run of each cron trigger
        in the store (the greatest ``cron:<trigger>:`` key of its workflow) is
        kept, and so is every run that still has jobs. Counts once, then
        deletes in transactions of at most ``batch_size`` runs, oldest first,
        until one deletes nothing, calling ``on_batch`` with each batch's
        count; ``dry_run`` only counts. Refusals: ``InvalidOption`` (see
        ``_maintenance``).
        """
        return await prune_runs(
            self.store,
            self.clock,
            older_than=older_than,
            statuses=statuses,
            batch_size=batch_size,
            dry_run=dry_run,
            on_batch=on_batch,
        )

    async def _existing(
        self, run_id: str
    ) -> Result[tuple[RunState, WorkflowDefinition], CancelError]:
        parsed = parse_run_id(run_id)
        if isinstance(parsed, Failure):
            return parsed
        state = await self.store.load(parsed.unwrap())
        if state is None:
            return Failure(NotFound(run_id=run_id))
        return self.registry.lookup(state.workflow).map(lambda found: (state, found))

    async def explain_run(self, run_id: str) -> Result[Explanation, LookupError_]:
        """Why the run is where it is, what can be done next, and the evidence.

        Works for runs of workflows this client does not know (the explanation
        says so). ``InvalidRunId`` or ``NotFound`` otherwise.
        """
        parsed = parse_run_id(run_id)
        if isinstance(parsed, Failure):
            return parsed
        state = await self.store.load(parsed.unwrap())
        if state is None:
            return Failure(NotFound(run_id=run_id))
        found = self.registry.lookup(state.workflow)
        definition = found.value_or(None)
        leases = {lease.job_id: lease for lease in await self.store.leases(state.id)}
        return Success(explain(definition, state, now=self.clock.now(), leases=leases))

    async def _command(self, run_id: str, event: OperatorEvent) -> Result[Run, CommandError]:
        """Apply an operator command; answer with the run and the command's receipt."""
        existing = await self._existing(run_id)
        if isinstance(existing, Failure):
            return existing
        state, definition = existing.unwrap()
        applied = await self.ledger.apply(
            state.id,
            lambda current, now: decide(definition, current, event, now=now),
            state=state,
        )
        if isinstance(applied, Success):
            decision = applied.unwrap()
            entry = decision.state.audit[-1]
            return Success(run_view(decision.state, receipt=Receipt(entry=entry)))
        refused = applied.failure()
        if isinstance(refused, RepeatedCommand):
            assert isinstance(refused.entry, AuditEntry)
            current = await self.store.load(state.id)
            return Success(
                run_view(current or state, receipt=Receipt(entry=refused.entry, repeated=True))
            )
        if isinstance(refused, InvalidRunId | NotFound | CommandRefused):
            return Failure(refused)
        raise ContentionError(f"{type(event).__name__} on {run_id} was refused: {refused}")

    async def cancel_run(
        self,
        run_id: str,
        *,
        actor: str | None = None,
        note: str | None = None,
        idempotency_key: str | None = None,
    ) -> Result[Run, CommandError]:
        """Cancel: pending and paused runs at once, active ones via ``cancelling``.

        The command is audited (``run.receipt``); repeated with the same
        ``idempotency_key`` it changes nothing and returns the first receipt.
        """
        by = Operator(actor=actor, note=note, idempotency_key=idempotency_key)
        return await self._command(run_id, CancelRequested(by=by))

    async def unblock_run(
        self,
        run_id: str,
        *,
        actor: str,
        note: str | None = None,
        idempotency_key: str | None = None,
    ) -> Result[Run, CommandError]:
        """Resume a run parked at a ``pause`` step along its ``ok`` route (audited)."""
        by = Operator(actor=actor, note=note, idempotency_key=idempotency_key)
        return await self._command(run_id, UnblockRequested(by=by))

    async def approve_run(
        self,
        run_id: str,
        *,
        actor: str,
        note: str | None = None,
        idempotency_key: str | None = None,
    ) -> Result[Run, CommandError]:
        """Approve a run parked at an ``approval`` step: it follows the ``ok`` route."""
        by = Operator(actor=actor, note=note, idempotency_key=idempotency_key)
        return await self._command(run_id, ApproveRequested(by=by))

    async def reject_run(
        self,
        run_id: str,
        *,
        actor: str,
        note: str | None = None,
        idempotency_key: str | None = None,
    ) -> Result[Run, CommandError]:
        """Reject a run parked at an ``approval`` step: its ``error`` route, or it fails."""
        by = Operator(actor=actor, note=note, idempotency_key=idempotency_key)
        return await self._command(run_id, RejectRequested(by=by))

    async def send_signal(
        self,
        run_id: str,
        name: str,
        payload: object = None,
        *,
        actor: str | None = None,
        note: str | None = None,
        idempotency_key: str | None = None,
    ) -> Result[Run, CommandError]:
        """Deliver signal ``name``: a run waiting for it goes on, any other keeps it.

        The payload is validated against the model of the steps waiting for
        ``name`` (``None`` means ``{}``; at most 16 KiB). Refused for names no step
        waits for (``UnknownSignal``), when no step the run may still reach waits
        for it or its wait timed out (``SignalNotAwaited``), and for finished runs
        (``RunNotActive``).
        """
        by = Operator(actor=actor, note=note, idempotency_key=idempotency_key)
        event = SignalSent(name=name, payload={} if payload is None else payload, by=by)
        return await self._command(run_id, event)

    async def replay_run(
        self,
        run_id: str,
        *,
        actor: str | None = None,
        note: str | None = None,
        idempotency_key: str | None = None,
        allow_irreversible: object = False,
        from_step: str | None = None,
    ) -> Result[Run, ReplayError]:
        """Start a new run from this run's payload; the source is untouched.

        The new run records the replay in its audit trail; with an
        ``idempotency_key`` a repeated replay returns the run the first one made.
        A replay that would run again a completed ``irreversible`` (or not
        compensatable) step is refused with ``UnsafeReplay`` unless
        ``allow_irreversible`` is exactly ``True``. With ``from_step``, the new
        run reuses the recorded outputs of the steps before that step and starts
        there (transition workflows).
        """
        existing = await self._existing(run_id)
        if isinstance(existing, Failure):
            problem = existing.failure()
            assert isinstance(problem, InvalidRunId | NotFound | UnknownWorkflow)
            return Failure(problem)
        state, definition = existing.unwrap()
        by = Operator(actor=actor, note=note, idempotency_key=idempotency_key)
        if idempotency_key is not None and _clean_name(idempotency_key):
            earlier = await self.store.find_by_idempotency_key(
                definition.name, replay_key(state.id, idempotency_key)
            )
            if earlier is not None:
                return Success(_replayed(earlier, repeated=True))
        decided = decide(
            definition,
            state,
            ReplayRequested(
                new_run_id=self.ids.new_run_id(),
                by=by,
                allow_irreversible=allow_irreversible,
                from_step=from_step,
            ),
            now=self.clock.now(),
        )
        if isinstance(decided, Failure):
            problem = decided.failure()
            assert isinstance(
                problem,
                UnknownTrigger
                | InvalidPayload
                | InvalidOption
                | UnsafeReplay
                | UnknownStep
                | IdempotencyKeyReused,
            ), problem
            return Failure(problem)
        decision = decided.unwrap()
        committed = await self.store.commit(decision)
        if isinstance(committed, Failure):
            clash = committed.failure()
            if isinstance(clash, DuplicateRun) and clash.existing_run_id != decision.state.id:
                winner = await self.store.load(RunId(clash.existing_run_id))
                if winner is not None:
                    return Success(_replayed(winner, repeated=True))
            raise ContentionError(f"could not create replay run: {clash}")
        self.ledger.committed(decision)
        return Success(_replayed(decision.state, repeated=False))

    async def wait_for(
        self,
        run_id: str,
        *,
        timeout: timedelta = timedelta(seconds=30),
        poll: timedelta = timedelta(milliseconds=20),
        or_paused: bool = False,
    ) -> Result[Run, LookupError_]:
        """Poll until the run is finished (or ``timeout`` passes) and return it with history.

        With ``or_paused`` it also returns once the run is parked (``paused``).
        """
        deadline = asyncio.get_running_loop().time() + timeout.total_seconds()
        while True:
            found = await self.inspect_run(run_id, include_history=True)
            if isinstance(found, Failure):
                return found
            status = found.unwrap().status
            if status.terminal or (or_paused and status is RunStatus.PAUSED):
                return found
            if asyncio.get_running_loop().time() >= deadline:
                return found
            await asyncio.sleep(poll.total_seconds())


def _replayed(state: RunState, *, repeated: bool) -> Run:
    """The view of a run a replay created, with the replay's receipt."""
    entry = next(e for e in state.audit if e.command.value == "replay")
    return run_view(state, existing=repeated, receipt=Receipt(entry=entry, repeated=repeated))
