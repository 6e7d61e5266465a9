"""Workflow definitions: immutable values describing triggers, steps and routes.

A :class:`WorkflowDefinition` is only ever produced by
:func:`squidmesh_core.validation.build_workflow`, so holding one means every
rule in that module holds. The helpers here answer the questions ``decide``
asks (which step comes next, what a step depends on) without validating again.

Two shapes share one type (see ``mode``):

* **transitions**: one entry step; each step routes ``ok`` and optionally
  ``error`` to another step or to ``complete``. Exactly one step is active at a time.
* **dependencies**: steps declare ``after=[...]``; roots start together, a step
  starts once everything it depends on has completed, the run completes when
  every step has.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from enum import StrEnum

from squidmesh_core.jsonvalue import DEFAULT_LIMITS, JsonLimits
from squidmesh_core.payload import EMPTY_CONTRACT, FieldSpec, PayloadContract
from squidmesh_core.retry import Retry
from squidmesh_core.state import DEADLINE_STEP, compensation_step

COMPLETE = "complete"
"""The terminal pseudo-target of a transition: the run completes."""
FAIL = "fail"
"""The other terminal pseudo-target: the run ends ``failed`` (a declined order)."""
ENDS = frozenset({COMPLETE, FAIL})
"""The pseudo-targets that end a run."""
DEADLINE = DEADLINE_STEP
"""The step name of a run's deadline timer (reserved: no workflow may declare it)."""

StepHandler = Callable[..., object]  # type: ignore[explicit-any]  # user signatures vary; the shell checks them
"""A user step: called by the shell with ``(input, ctx)``. The core never calls it."""


class TriggerKind(StrEnum):
    """How a run gets started."""

    MANUAL = "manual"
    CRON = "cron"


IRREVERSIBLE = "irreversible"
NOT_COMPENSATABLE = "not_compensatable"


class StepKind(StrEnum):
    """What a step does."""

    ACTION = "action"
    WAIT = "wait"
    LOG = "log"
    PAUSE = "pause"
    APPROVAL = "approval"
    SIGNAL = "signal"

    @property
    def parks(self) -> bool:
        """True for the steps that park the run until someone (or something) resumes it."""
        return self in (StepKind.PAUSE, StepKind.APPROVAL, StepKind.SIGNAL)


class LogLevel(StrEnum):
    """Levels a ``log`` step may use."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class Outcome(StrEnum):
    """Which result of a step a transition follows."""

    OK = "ok"
    ERROR = "error"


class WorkflowMode(StrEnum):
    """The two workflow shapes."""

    TRANSITIONS = "transitions"
    DEPENDENCIES = "dependencies"


@dataclass(frozen=True, slots=True, kw_only=True)
class TriggerSpec:
    """A declared trigger (as written; checked by ``build_workflow``)."""

    name: str
    kind: TriggerKind
    payload: object = None
    """A pydantic ``BaseModel`` subclass, or ``None`` for an empty contract."""
    expression: str | None = None
    """Cron expression (cron triggers only)."""
    timezone: str | None = None
    """IANA timezone of the cron expression (cron triggers only)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StepSpec:
    """A declared step (as written; checked by ``build_workflow``)."""

    name: str
    kind: StepKind
    handler: StepHandler | None = None
    """The user callable of an ``action`` step."""
    input_keys: tuple[str, ...] | None = None
    """If set, the step receives only these keys of its assembled input."""
    output_key: str | None = None
    """If set, the step's output is stored under this single key of the run context."""
    retry: Retry | None = None
    """Attempts and backoff; ``None`` means a single attempt."""
    max_lost: int = 3
    """Attempts whose worker died that are run again, apart from ``retry`` (see ADR 0007)."""
    irreversible: bool = False
    """Its side effect cannot be undone: a replay that would repeat it needs approval."""
    compensatable: bool = True
    """``False``: its side effect cannot be compensated; guarded like ``irreversible``."""
    max_rechecks: int = 1000
    """Deferred attempts ("not yet, look again later") allowed before the step fails."""
    after: tuple[str, ...] = ()
    """Steps that must complete first (dependency workflows)."""
    duration: timedelta | None = None
    """How long a ``wait`` step delays the next step."""
    message: str | None = None
    """What a ``log`` step logs."""
    level: str = LogLevel.INFO
    """The level a ``log`` step logs at."""
    signal: str | None = None
    """The signal a ``signal`` step waits for."""
    signal_payload: object = None
    """A pydantic model the signal's payload must satisfy (``None``: an empty payload)."""
    timeout: timedelta | None = None
    """An action step's attempt must end this long after it starts; a ``signal``
    step gives up after waiting this long."""
    on_timeout: str | None = None
    """Where a timed-out signal wait goes (a step or ``complete``); ``None``: its error route."""
    compensate: StepHandler | None = None
    """Undoes the step's side effect if the run later fails (saga compensation)."""
    compensate_retry: Retry | None = None
    """Attempts and backoff of the compensation; ``None``: the step's own ``retry``."""
    transaction: bool = False
    """The step gets a database transaction that commits with its outcome (SQL stores)."""
    option_problems: tuple[str, ...] = ()
    """Problems the DSL found while converting loose options (reported by validation)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TransitionSpec:
    """Route ``on`` outcome of ``from_step`` to ``to`` (a step or :data:`COMPLETE`)."""

    from_step: str
    on: Outcome
    to: str
    recovery: str | None = None
    """``compensation`` or ``undo``: labels an error route that recovers from the
    failure (recorded on the failed step, and reported as an event)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowDefinition:
    """A validated, immutable workflow."""

    name: str
    triggers: tuple[TriggerSpec, ...]
    steps: tuple[StepSpec, ...]
    transitions: tuple[TransitionSpec, ...]
    mode: WorkflowMode
    entry_steps: tuple[str, ...]
    contracts: Mapping[str, PayloadContract] = field(default_factory=dict)
    """Checked payload contract of each trigger, by trigger name."""
    payload_fields: tuple[FieldSpec, ...] = ()
    """Union of all triggers' fields (first declaration wins)."""
    limits: JsonLimits = DEFAULT_LIMITS
    """Size and depth bounds for payloads, initial contexts and step outputs."""
    deadline: timedelta | None = None
    """A run not finished this long after it started fails with ``deadline_exceeded``."""
    timed_steps: frozenset[str] = frozenset()
    """Action steps with a ``timeout`` (outcomes of other steps skip the timeout check)."""
    signal_contracts: Mapping[str, PayloadContract] = field(default_factory=dict)
    """Checked payload contract of each signal the workflow waits for, by signal name."""
    compensations: Mapping[str, StepSpec] = field(default_factory=dict)
    """The compensation of each step that declares one, as the action step
    ``<step>:compensate`` (its handler, retry, timeout and bounds), by that name."""
    compensate_on_cancel: bool = False
    """Whether a cancelled run compensates its completed steps too."""

    @property
    def default_trigger(self) -> TriggerSpec:
        """The first declared trigger."""
        return self.triggers[0]

    def trigger(self, name: str) -> TriggerSpec | None:
        """The trigger called ``name``, if declared."""
        return next((t for t in self.triggers if t.name == name), None)

    def contract(self, trigger: str) -> PayloadContract:
        """The payload contract of ``trigger`` (empty if it declares none)."""
        return self.contracts.get(trigger, EMPTY_CONTRACT)

    def step(self, name: str) -> StepSpec | None:
        """The step called ``name``, if declared (or the compensation of that name)."""
        for spec in self.steps:
            if spec.name == name:
                return spec
        return self.compensations.get(name) if self.compensations else None

    def replay_guard(self, step: str) -> str | None:
        """The replay guard a completed ``step`` records (``None``: none)."""
        spec = self.step(step)
        if spec is None:
            return None
        if spec.irreversible:
            return IRREVERSIBLE
        return None if spec.compensatable else NOT_COMPENSATABLE

    def signal_contract(self, name: str) -> PayloadContract | None:
        """The payload contract of signal ``name``, or ``None`` if no step waits for it."""
        return self.signal_contracts.get(name)

    def step_names(self) -> tuple[str, ...]:
        """Step names in declaration order."""
        return tuple(s.name for s in self.steps)

    def target(self, step: str, outcome: Outcome) -> str | None:
        """Where ``outcome`` of ``step`` routes to, or ``None`` without such a route."""
        return next(
            (t.to for t in self.transitions if t.from_step == step and t.on is outcome), None
        )

    def recovery(self, step: str) -> str | None:
        """The ``recovery=`` marker of ``step``'s error route, if it has one."""
        return next(
            (t.recovery for t in self.transitions if t.from_step == step and t.on is Outcome.ERROR),
            None,
        )

    def dependents_ready(
        self, completed: frozenset[str], started: frozenset[str]
    ) -> tuple[str, ...]:
        """Dependency steps whose dependencies all completed and that have not started."""
        return tuple(
            s.name
            for s in self.steps
            if s.name not in started and all(dep in completed for dep in s.after)
        )

    def ancestors(self, step: str) -> tuple[str, ...]:
        """Every step ``step`` transitively depends on, in declaration order."""
        found: set[str] = set()
        spec = self.step(step)
        frontier = list(spec.after) if spec else []
        while frontier:
            name = frontier.pop()
            if name in found:
                continue
            found.add(name)
            dep = self.step(name)
            frontier.extend(dep.after if dep else ())
        return tuple(n for n in self.step_names() if n in found)


def compensation_specs(steps: tuple[StepSpec, ...]) -> Mapping[str, StepSpec]:
    """The compensation of each step that has one, as an action step of its own.

    ``<step>:compensate`` runs the ``compensate`` handler with the step's
    ``compensate_retry`` (or its ``retry``), timeout and bounds; it has no
    routes, no input or output mapping, and no markers of its own.
    """
    return {
        compensation_step(s.name): replace(
            s,
            name=compensation_step(s.name),
            handler=s.compensate,
            retry=s.compensate_retry if s.compensate_retry is not None else s.retry,
            input_keys=None,
            output_key=None,
            after=(),
            irreversible=False,
            compensatable=True,
            compensate=None,
            compensate_retry=None,
        )
        for s in steps
        if s.compensate is not None
    }
