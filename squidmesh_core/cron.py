"""Cron schedules: validation and tick arithmetic, pure.

Expressions have the usual five fields (minute, hour, day of month, month, day
of week) or one of the aliases ``@yearly``/``@annually``, ``@monthly``,
``@weekly``, ``@daily``/``@midnight``, ``@hourly``. Parsing and iteration are
done by ``cronsim`` (a maintained, pure-Python cron evaluator that follows
Debian cron, including its handling of daylight-saving transitions: a job due
in an hour that is skipped in spring runs when the clock jumps, and a job in an
hour that repeats in autumn runs once). Time zones are IANA names resolved by
the standard library's ``zoneinfo`` from the installed time-zone database,
which is static reference data, not I/O the core depends on for its decisions.

This module is also the one source of two cron rules the shell relies on: a
tick's run is keyed ``cron:<trigger>:<tick in UTC>`` (:func:`schedule_id`,
:func:`cron_key_prefix`, :func:`tick_of_key`, :data:`CRON_KEY_PREFIX`), and its
payload is the trigger's contract resolved from defaults alone
(:func:`cron_payload`).

Every function takes the current time as an argument; nothing here reads a
clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from returns.result import Failure, Result, Success

from squidmesh_core.definition import WorkflowDefinition
from squidmesh_core.errors import InvalidPayload
from squidmesh_core.jsonvalue import EMPTY_OBJECT, JsonObject
from squidmesh_core.payload import validate_payload

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_PROBE = datetime(2000, 1, 1, tzinfo=UTC)
HOST_DEPENDENT_ZONES = frozenset({"localtime", "factory", "posixrules"})
"""Names the zone database resolves differently per host: workers would disagree."""
TICK_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
MAX_TICKS = 10_000
"""Most ticks one call enumerates (a guard against "every minute for a decade")."""
CRON_KEY_PREFIX = "cron:"
"""Idempotency keys with this prefix belong to cron triggers; callers may not use them."""


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A validated cron expression in an IANA time zone."""

    expression: str
    """As written by the user (aliases kept)."""
    timezone: str

    @property
    def fields(self) -> str:
        """The five-field form (aliases expanded)."""
        return ALIASES.get(self.expression.strip().lower(), self.expression.strip())

    @property
    def zone(self) -> ZoneInfo:
        """The time zone the expression is read in."""
        return ZoneInfo(self.timezone)

    def after(self, moment: datetime) -> datetime:
        """The first tick strictly after ``moment`` (aware), in UTC."""
        local = moment.astimezone(self.zone).replace(second=0, microsecond=0)
        for tick in CronSim(self.fields, local):
            if tick > moment:
                return tick.astimezone(UTC)
        raise AssertionError("unreachable: a valid cron expression always has a next tick")

    def upcoming(self, moment: datetime, count: int) -> tuple[datetime, ...]:
        """The next ``count`` ticks strictly after ``moment``, in UTC."""
        ticks: list[datetime] = []
        cursor = moment
        for _ in range(min(count, MAX_TICKS)):
            cursor = self.after(cursor)
            ticks.append(cursor)
        return tuple(ticks)

    def between(self, start: datetime, end: datetime) -> tuple[datetime, ...]:
        """Ticks in ``(start, end]``, oldest first, at most ``MAX_TICKS`` (the newest kept)."""
        ticks: list[datetime] = []
        cursor = start
        while True:
            cursor = self.after(cursor)
            if cursor > end:
                return tuple(ticks)
            ticks.append(cursor)
            if len(ticks) > MAX_TICKS:
                ticks.pop(0)

    def latest(self, now: datetime, *, horizon: timedelta) -> datetime | None:
        """The most recent tick at or before ``now``, looking back at most ``horizon``."""
        found = self.between(now - horizon, now)
        return found[-1] if found else None


def parse_cron(expression: object, timezone: object) -> Result[CronSchedule, str]:
    """Validate a cron expression and time zone; the error says what is wrong."""
    if not isinstance(expression, str) or not expression.strip():
        return Failure("needs a cron expression")
    if not isinstance(timezone, str) or not timezone.strip():
        return Failure("needs an IANA time zone such as 'Europe/Riga' or 'Etc/UTC'")
    fields = ALIASES.get(expression.strip().lower(), expression.strip())
    if fields.startswith("@"):
        known = ", ".join(sorted(ALIASES))
        return Failure(f"has an unknown cron alias {expression!r} (known: {known})")
    try:
        CronSim(fields, _PROBE)
    except CronSimError as exc:
        return Failure(f"has an invalid cron expression {expression!r}: {exc}")
    if timezone.strip().lower() in HOST_DEPENDENT_ZONES:
        return Failure(
            f"has the host-dependent time zone {timezone!r}: name a zone such as 'Etc/UTC'"
        )
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return Failure(f"has an unknown time zone {timezone!r}")
    return Success(CronSchedule(expression=expression.strip(), timezone=timezone))


@dataclass(frozen=True, slots=True)
class TickPlan:
    """What a trigger loop should do now."""

    start: tuple[datetime, ...]
    """Ticks to start a run for, oldest first."""
    skipped: int
    """Missed ticks older than the misfire window, not started."""


def plan_ticks(
    schedule: CronSchedule,
    *,
    last_tick: datetime | None,
    now: datetime,
    misfire_window: timedelta | None,
    first_seen: datetime,
) -> TickPlan:
    """Which ticks to start, given the newest tick already started.

    * Ticks after ``last_tick`` (or, for a schedule never started, after
      ``first_seen``, when the schedule was activated) and at or before ``now``
      are due.
    * The newest due tick is always started. With ``misfire_window=None`` it is
      the only one; with a window, every due tick no older than
      ``now - misfire_window`` is started too.
    * Due ticks not started are counted in ``skipped`` (at most ``MAX_TICKS``
      are looked at: a longer outage is reported as that many).
    """
    since = last_tick if last_tick is not None else first_seen
    due = schedule.between(since, now)
    if not due:
        return TickPlan(start=(), skipped=0)
    if misfire_window is None:
        kept = due[-1:]
    else:
        kept = tuple(t for t in due[:-1] if t >= now - misfire_window) + due[-1:]
    return TickPlan(start=kept, skipped=len(due) - len(kept))


def cron_key_prefix(trigger: str) -> str:
    """What every idempotency key of ``trigger``'s ticks begins with: ``cron:<trigger>:``.

    >>> cron_key_prefix("nightly")
    'cron:nightly:'
    """
    return f"{CRON_KEY_PREFIX}{trigger}:"


def schedule_id(trigger: str, tick: datetime) -> str:
    """The stable id of one tick of a workflow's trigger (unique within the workflow).

    It is also the run's idempotency key: ``cron:<trigger>:<tick in UTC>``.

    >>> schedule_id("nightly", datetime(2026, 3, 29, 1, 0, tzinfo=UTC))
    'cron:nightly:2026-03-29T01:00:00Z'
    """
    return cron_key_prefix(trigger) + tick.astimezone(UTC).strftime(TICK_FORMAT)


def tick_of_key(key: str | None, trigger: str) -> datetime | None:
    """The tick a ``schedule_id`` names, or ``None`` if ``key`` is not one of ``trigger``'s."""
    prefix = cron_key_prefix(trigger)
    if key is None or not key.startswith(prefix):
        return None
    text = key.removeprefix(prefix)
    if len(text) != 20:
        return None
    try:
        return datetime.strptime(text, TICK_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def cron_payload(
    definition: WorkflowDefinition, trigger: str, *, at: datetime
) -> Result[JsonObject, InvalidPayload]:
    """The payload of a run of the cron trigger ``trigger``: its contract from defaults alone.

    A cron run has nobody to supply fields, so the payload is what the
    trigger's contract resolves to with none given; ``Today()`` and ``Now()``
    defaults resolve at ``at`` (the tick, for a run). A failure names the
    fields that have no default or whose default does not validate.

    >>> from pydantic import BaseModel
    >>> from squidmesh_core.definition import COMPLETE
    >>> from squidmesh_core.dsl import chain, cron, step, workflow
    >>> class Report(BaseModel):
    ...     region: str = "eu"
    >>> class Needs(BaseModel):
    ...     account: str
    >>> flow = workflow("w", triggers=[cron("nightly", "@daily", payload=Report),
    ...                                cron("hourly", "@hourly", payload=Needs)],
    ...                 steps=[step("s", print)], transitions=chain("s", COMPLETE))
    >>> cron_payload(flow, "nightly", at=datetime(2026, 3, 29, 1, 0, tzinfo=UTC)).unwrap()
    {'region': 'eu'}
    >>> cron_payload(flow, "hourly", at=datetime(2026, 3, 29, 1, 0, tzinfo=UTC)).failure().missing
    ('account',)
    """
    return validate_payload(
        definition.contract(trigger),
        EMPTY_OBJECT,
        workflow=definition.name,
        trigger=trigger,
        now=at,
        limits=definition.limits,
    )
