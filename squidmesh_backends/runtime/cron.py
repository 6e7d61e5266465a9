"""The cron trigger loop: start one run per tick, however many workers run it.

Every started runtime whose ``cron`` list names a workflow runs this loop. For
each active cron trigger it asks the store for the newest tick already started
(the greatest idempotency key ``cron:<trigger>:<tick>``), lets the core plan
which ticks are due (``plan_ticks``: catch-up within the misfire window), and
starts a run for each with that key. The key is unique per workflow in every
store, and the run row carrying it is inserted in the same transaction as the
run's jobs, so when several workers race for one tick exactly one run is
created; the others get the existing run back.

Runs carry their schedule in the context (``schedule``: id, workflow, trigger,
expression, timezone, tick); steps see it as ``ctx.schedule``, and replays keep
it. Ticks skipped beyond the misfire window are reported once, by the worker
that started the newest tick, as a ``cron.ticks_skipped`` event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from returns.result import Failure, Success

from squidmesh_backends.errors import BackendError, ConfigurationError
from squidmesh_backends.logs import get_logger
from squidmesh_backends.outage import Outage
from squidmesh_backends.runtime.client import Client
from squidmesh_core.commands import Emit, Topic
from squidmesh_core.cron import (
    TICK_FORMAT,
    CronSchedule,
    cron_key_prefix,
    cron_payload,
    parse_cron,
    plan_ticks,
    schedule_id,
    tick_of_key,
)
from squidmesh_core.definition import TriggerKind, WorkflowDefinition
from squidmesh_core.ids import RunId

LOG = get_logger("squidmesh.cron")


@dataclass(frozen=True, slots=True)
class ActiveSchedule:
    """One cron trigger of one activated workflow."""

    definition: WorkflowDefinition
    trigger: str
    schedule: CronSchedule

    @property
    def prefix(self) -> str:
        return cron_key_prefix(self.trigger)


def active_schedules(
    client: Client, names: Iterable[str | WorkflowDefinition], *, now: datetime
) -> tuple[ActiveSchedule, ...]:
    """The cron triggers of the listed workflows, checked for activation.

    Raises:
        ConfigurationError: a listed workflow is not registered or has no cron
            trigger, or a cron trigger's payload does not resolve from its
            defaults alone (a cron run has nobody to supply it).
    """
    found: list[ActiveSchedule] = []
    for name in names:
        looked_up = client.registry.lookup(name)
        label = name.name if isinstance(name, WorkflowDefinition) else name
        if isinstance(looked_up, Failure):
            raise ConfigurationError(f"cron: workflow {label!r} is not registered in this runtime")
        definition = looked_up.unwrap()
        crons = [t for t in definition.triggers if t.kind is TriggerKind.CRON]
        if not crons:
            raise ConfigurationError(f"cron: workflow {label!r} has no cron trigger")
        for trigger in crons:
            resolved = cron_payload(definition, trigger.name, at=now)
            if isinstance(resolved, Failure):
                raise ConfigurationError(
                    f"cron trigger {trigger.name!r} of {definition.name!r}: its payload must "
                    f"resolve from defaults alone, but {resolved.failure().describe()}"
                )
            schedule = parse_cron(trigger.expression, trigger.timezone).unwrap()
            found.append(ActiveSchedule(definition, trigger.name, schedule))
    return tuple(found)


class CronLoop:
    """Starts due ticks of the active schedules; one per started runtime."""

    def __init__(
        self,
        client: Client,
        schedules: tuple[ActiveSchedule, ...],
        *,
        misfire_window: timedelta | None,
        poll: timedelta,
    ) -> None:
        self.client = client
        self.schedules = schedules
        self.misfire_window = misfire_window
        self.poll = poll
        self.activated_at = client.clock.now()
        self.started: list[RunId] = []
        self.lost_races = 0
        self.store_reads = 0
        self.outage = Outage("the store", logger="squidmesh.cron")
        """Store faults, reported once per outage."""
        self._newest: dict[tuple[str, str], datetime] = {}
        """The newest tick known started, per (workflow, trigger): it survives pruning of
        old runs and spares a store read while nothing is due."""

    async def tick_once(self, now: datetime) -> list[RunId]:
        """Start every run due at ``now``; the ids of the runs this call created."""
        created: list[RunId] = []
        for active in self.schedules:
            where = (active.definition.name, active.trigger)
            remembered = self._newest.get(where)
            if remembered is not None and not active.schedule.between(remembered, now):
                continue  # nothing due since the newest tick this loop saw started
            self.store_reads += 1
            stored = tick_of_key(
                await self.client.store.latest_idempotency_key(
                    active.definition.name, active.prefix
                ),
                active.trigger,
            )
            known = [t for t in (stored, remembered) if t is not None]
            plan = plan_ticks(
                active.schedule,
                last_tick=max(known) if known else None,
                now=now,
                misfire_window=self.misfire_window,
                first_seen=self.activated_at,
            )
            for tick in plan.start:
                run_id = await self._start(active, tick)
                self._newest[where] = max(tick, self._newest.get(where, tick))
                if run_id is None:
                    continue
                created.append(run_id)
                if plan.skipped and tick == plan.start[-1]:
                    self._report_skipped(active, run_id, tick, plan.skipped)
            if stored is not None:
                self._newest[where] = max(stored, self._newest.get(where, stored))
        self.started.extend(created)
        return created

    async def _start(self, active: ActiveSchedule, tick: datetime) -> RunId | None:
        key = schedule_id(active.trigger, tick)
        meta: dict[str, object] = {
            "id": key,
            "workflow": active.definition.name,
            "trigger": active.trigger,
            "expression": active.schedule.expression,
            "timezone": active.schedule.timezone,
            "tick": tick.strftime(TICK_FORMAT),
        }
        # Defaults such as Today() and Now() resolve at the tick, not when the loop ran.
        payload = cron_payload(active.definition, active.trigger, at=tick)
        if isinstance(payload, Failure):
            LOG.error("cron %s/%s could not resolve the payload for %s: %s",
                      active.definition.name, active.trigger, meta["tick"],
                      payload.failure().describe())  # fmt: skip
            return None
        started = await self.client.start_cron_run(
            active.definition,
            dict(payload.unwrap()),
            trigger=active.trigger,
            idempotency_key=key,
            context={"schedule": meta},  # type: ignore[dict-item]
        )
        match started:
            case Success(run) if not run.existing:
                LOG.info("cron %s/%s started %s for %s", active.definition.name, active.trigger,
                         run.id, meta["tick"])  # fmt: skip
                return RunId(run.id)
            case Success(_):
                self.lost_races += 1  # another worker started this tick
                return None
            case Failure(problem):
                LOG.error("cron %s/%s could not start a run: %s", active.definition.name,
                          active.trigger, problem)  # fmt: skip
                return None
        return None

    def _report_skipped(
        self, active: ActiveSchedule, run_id: RunId, tick: datetime, skipped: int
    ) -> None:
        LOG.warning(
            "cron %s/%s skipped %d missed tick(s) older than the misfire window",
            active.definition.name,
            active.trigger,
            skipped,
        )
        self.client.publisher.publish(
            Emit(
                topic=Topic.CRON_TICKS_SKIPPED,
                run_id=run_id,
                workflow=active.definition.name,
                attributes={
                    "trigger": active.trigger,
                    "skipped": skipped,
                    "started_tick": tick.strftime(TICK_FORMAT),
                },
            )
        )

    async def run(self) -> None:
        """Loop until cancelled: start due ticks, sleep until the next (bounded by ``poll``)."""
        while True:
            delay = self.poll.total_seconds()
            try:
                await self.tick_once(self.client.clock.now())
                now = self.client.clock.now()
                upcoming = min((a.schedule.after(now) for a in self.schedules), default=None)
                if upcoming is not None:
                    delay = min(delay, max((upcoming - now).total_seconds(), 0.0) + 0.001)
            except asyncio.CancelledError:
                raise
            except BackendError as exc:
                self.outage.failed(exc)
            except Exception:
                LOG.exception("cron pass failed; retrying after the poll interval")
            else:
                self.outage.reached()
            await asyncio.sleep(delay)
