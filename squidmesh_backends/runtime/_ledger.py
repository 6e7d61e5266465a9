"""The ledger: decide on the latest state, commit with a version check, then publish.

Rules:

1. **One commit per decision.** A decision is committed with its run's version
   and, for a delivery or an outcome, the lease fence; nothing is written
   outside that commit.
2. **Conflicts decide again.** A version conflict means the run changed: the
   ledger loads it and decides the same fact again, up to
   ``max_conflict_retries`` times. A refusal is final, unless the caller asks
   for a refusal on the state it held to be decided again on the stored state
   (``reload_on_refusal``: the inline path, whose held state may be behind).
3. **A delivery renews its lease in its own commit** (``renew_until``), so a
   message that waited in a broker cannot be reclaimed between the start and
   the first heartbeat. A reclaim ends the job instead and renews nothing.
4. **Events follow commits.** After a commit, its events go to every sink and
   the dispatcher's doorbell rings when the decision left work due now
   (``Decision.wakes_dispatcher``). A failing sink never breaks the runtime.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime

from returns.result import Failure, Result, Success

from squidmesh_backends.errors import ContentionError
from squidmesh_backends.logs import get_logger
from squidmesh_backends.runtime._doorbell import Doorbell
from squidmesh_backends.runtime.settings import RuntimeSettings
from squidmesh_core.commands import Decision, Emit, Topic
from squidmesh_core.errors import (
    DuplicateRun,
    NotFound,
    Rejected,
    StaleDelivery,
    StaleLease,
    VersionConflict,
)
from squidmesh_core.ids import RunId
from squidmesh_core.ports import Clock, EventSink, Fence, RunStore
from squidmesh_core.state import RunState

LOG = get_logger("squidmesh.runtime")
INFO_TOPICS = frozenset(
    {
        Topic.RUN_CREATED,
        Topic.RUN_TRANSITION,
        Topic.STEP_STARTED,
        Topic.STEP_COMPLETED,
        Topic.STEP_FAILED,
        Topic.STEP_RETRY_SCHEDULED,
        Topic.STEP_DEFERRED,
        Topic.STEP_CANCELLED,
        Topic.STEP_PARKED,
        Topic.COMPENSATION_STARTED,
        Topic.COMPENSATION_FINISHED,
        Topic.COMPENSATION_GAVE_UP,
        Topic.LEASE_RECLAIMED,
    }
)
"""Events logged at INFO (a run's and its steps' lifecycle); the rest at DEBUG."""

DecideOn = Callable[[RunState, datetime], Result[Decision, Rejected]]
"""A fact to decide on a run's state at a time (see rule 2)."""


class Publisher:
    """Hands committed events to the sinks (rule 4)."""

    def __init__(self, sinks: Sequence[EventSink]) -> None:
        self.sinks = tuple(sinks)

    def publish(self, event: Emit) -> None:
        """Hand one event to every sink (after whatever commit it reports)."""
        level = logging.INFO if event.topic in INFO_TOPICS else logging.DEBUG
        if LOG.isEnabledFor(level):
            self._log(event, level)
        for sink in self.sinks:
            try:
                sink.publish(event)
            except Exception:  # a failing subscriber must never break the runtime
                LOG.exception("event sink %r failed on %s", sink, event.topic)

    @staticmethod
    def _log(event: Emit, level: int) -> None:
        job_id = event.attributes.get("job_id")
        where = f" {event.step}#{event.attempt}" if event.step and event.attempt else ""
        LOG.log(
            level,
            "%s%s %s",
            event.topic,
            where,
            json.dumps(dict(event.attributes), sort_keys=True, default=str),
            extra={  # the event's own run, not whatever delivery publishes it
                "run_id": event.run_id,
                "workflow": event.workflow,
                "step": event.step,
                "attempt": event.attempt,
                "job_id": job_id if isinstance(job_id, str) else None,
            },
        )


class Ledger:
    """Commits decisions for a client and a worker (see the module rules)."""

    def __init__(
        self,
        *,
        store: RunStore,
        clock: Clock,
        settings: RuntimeSettings,
        publisher: Publisher,
        doorbell: Doorbell,
    ) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings
        self.publisher = publisher
        self.doorbell = doorbell

    def committed(self, decision: Decision) -> None:
        """Publish a committed decision's events and ring for the work it made due."""
        for event in decision.emitted:
            self.publisher.publish(event)
        if decision.wakes_dispatcher(self.clock.now()):
            self.doorbell.ring()

    async def apply(
        self,
        run_id: RunId,
        decide_on: DecideOn,
        *,
        fence: Fence | None = None,
        renew_until: datetime | None = None,
        state: RunState | None = None,
        reload_on_refusal: bool = False,
    ) -> Result[Decision, Rejected | NotFound]:
        """Decide on the latest state of ``run_id`` and commit it (rules 1-4)."""
        for _ in range(self.settings.max_conflict_retries):
            held, state = state, None
            current = held if held is not None else await self.store.load(run_id)
            if current is None:
                return Failure(NotFound(run_id=run_id))
            decided = decide_on(current, self.clock.now())
            if isinstance(decided, Failure):
                if held is not None and reload_on_refusal:
                    continue  # decided on what the caller held: try the stored state
                return decided
            decision = decided.unwrap()
            guard = fence
            if fence is not None and renew_until is not None and not decision.reclaimed:
                guard = replace(fence, renew_until=renew_until)
            committed = await self.store.commit(decision, fence=guard)
            match committed:
                case Success(_):
                    self.committed(decision)
                    return Success(decision)
                case Failure(VersionConflict()):
                    continue
                case Failure(StaleLease(job_id=job_id)):
                    return Failure(
                        StaleDelivery(job_id=job_id, reason="the lease is no longer held")
                    )
                case Failure(DuplicateRun() as duplicate):
                    raise ContentionError(f"unexpected duplicate while updating a run: {duplicate}")
        raise ContentionError(
            f"run {run_id} changed {self.settings.max_conflict_retries} times in a row"
        )
