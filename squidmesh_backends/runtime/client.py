"""``Client``: start, inspect, list, cancel and replay runs with nothing but a store.

A client never claims or runs a step. Web handlers, CLI commands and scripts use
it alone; a :class:`~squidmesh_backends.runtime.worker.Worker` (started only in
worker processes) does the executing, and :class:`~squidmesh_backends.Runtime`
composes the two in one process. Every method returns a ``Result``: expected
refusals are values; infrastructure faults raise ``BackendError``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import TypeAlias

from returns.result import Failure, Result, Success

from squidmesh_backends.errors import ContentionError
from squidmesh_backends.runtime._doorbell import Doorbell
from squidmesh_backends.runtime._ledger import Ledger, Publisher
from squidmesh_backends.runtime._registry import Registry
from squidmesh_backends.runtime.clock import SystemClock
from squidmesh_backends.runtime.ids import RandomIds
from squidmesh_backends.runtime.settings import RuntimeSettings
from squidmesh_core.cron import CRON_KEY_PREFIX
from squidmesh_core.decide import decide
from squidmesh_core.definition import WorkflowDefinition
from squidmesh_core.errors import (
    DuplicateRun,
    InvalidOption,
    InvalidPayload,
    InvalidRunId,
    InvalidTransition,
    NotFound,
    UnknownTrigger,
    UnknownWorkflow,
)
from squidmesh_core.events import CancelRequested, ReplayRequested, RunRequested
from squidmesh_core.ids import IdempotencyKey, RunId, parse_run_id
from squidmesh_core.jsonvalue import EMPTY_OBJECT, JsonObject, storable_text_problem
from squidmesh_core.ports import Clock, EventSink, IdSource, RunStore
from squidmesh_core.state import RunState, RunStatus
from squidmesh_core.views import Run, run_view

StartError: TypeAlias = UnknownWorkflow | UnknownTrigger | InvalidPayload | InvalidOption
LookupError_: TypeAlias = InvalidRunId | NotFound
CancelError: TypeAlias = InvalidRunId | NotFound | UnknownWorkflow | InvalidTransition
ReplayError: TypeAlias = InvalidRunId | NotFound | UnknownWorkflow | UnknownTrigger | InvalidPayload
ListError: TypeAlias = InvalidOption

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
    ) -> Result[Run, StartError]:
        """Validate the payload and start a run (nothing is stored if it is invalid).

        Returns:
            ``Success(Run)`` (``run.existing`` is true when an earlier run with the
            same idempotency key is returned), or ``Failure`` with
            ``UnknownWorkflow``, ``UnknownTrigger``, ``InvalidPayload`` or
            ``InvalidOption`` (a malformed or reserved idempotency key).
        """
        return await self._start(
            workflow, payload, trigger=trigger, idempotency_key=idempotency_key, cron=False
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
    ) -> Result[Run, StartError]:
        found = self.registry.lookup(workflow)
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
            and idempotency_key.startswith(CRON_KEY_PREFIX)
        ):
            return Failure(
                InvalidOption(
                    option="idempotency_key",
                    reason=f"keys beginning with {CRON_KEY_PREFIX!r} belong to cron triggers",
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
    ) -> Result[tuple[Run, ...], ListError]:
        """Runs, newest first, filtered by workflow and status (``InvalidOption``)."""
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int)
            or not 1 <= limit <= MAX_LIST_LIMIT
        ):
            return Failure(
                InvalidOption(
                    option="limit", reason=f"must be an integer from 1 to {MAX_LIST_LIMIT}"
                )
            )
        wanted: RunStatus | None = None
        if status is not None:
            try:
                wanted = RunStatus(status)
            except ValueError:
                return Failure(
                    InvalidOption(
                        option="status",
                        reason=f"must be one of {', '.join(s.value for s in RunStatus)}",
                    )
                )
        name = workflow.name if isinstance(workflow, WorkflowDefinition) else workflow
        if name is not None and not _clean_name(name):
            return Failure(InvalidOption(option="workflow", reason="must be a workflow name"))
        states = await self.store.list_runs(workflow=name, status=wanted, limit=limit)
        return Success(tuple(run_view(s) for s in states))

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

    async def cancel_run(self, run_id: str) -> Result[Run, CancelError]:
        """Cancel: pending runs at once, active ones via ``cancelling``."""
        existing = await self._existing(run_id)
        if isinstance(existing, Failure):
            return existing
        state, definition = existing.unwrap()
        applied = await self.ledger.apply(
            state.id,
            lambda current, now: decide(definition, current, CancelRequested(), now=now),
            state=state,
        )
        match applied:
            case Success(decision):
                return Success(run_view(decision.state))
            case Failure(InvalidTransition() | NotFound() as refused):
                return Failure(refused)
            case Failure(other):
                raise ContentionError(f"cancel of {run_id} was refused unexpectedly: {other}")
        raise AssertionError(applied)

    async def replay_run(self, run_id: str) -> Result[Run, ReplayError]:
        """Start a new run from this run's payload; the source is untouched."""
        existing = await self._existing(run_id)
        if isinstance(existing, Failure):
            problem = existing.failure()
            assert not isinstance(problem, InvalidTransition)
            return Failure(problem)
        state, definition = existing.unwrap()
        decided = decide(
            definition,
            state,
            ReplayRequested(new_run_id=self.ids.new_run_id()),
            now=self.clock.now(),
        )
        if isinstance(decided, Failure):
            problem = decided.failure()
            assert isinstance(problem, UnknownTrigger | InvalidPayload)
            return Failure(problem)
        decision = decided.unwrap()
        committed = await self.store.commit(decision)
        if isinstance(committed, Failure):
            raise ContentionError(f"could not create replay run: {committed.failure()}")
        self.ledger.committed(decision)
        return Success(run_view(decision.state))

    async def wait_for(
        self,
        run_id: str,
        *,
        timeout: timedelta = timedelta(seconds=30),
        poll: timedelta = timedelta(milliseconds=20),
    ) -> Result[Run, LookupError_]:
        """Poll until the run is finished (or ``timeout`` passes) and return it with history."""
        deadline = asyncio.get_running_loop().time() + timeout.total_seconds()
        while True:
            found = await self.inspect_run(run_id, include_history=True)
            if isinstance(found, Failure) or found.unwrap().status.terminal:
                return found
            if asyncio.get_running_loop().time() >= deadline:
                return found
            await asyncio.sleep(poll.total_seconds())
