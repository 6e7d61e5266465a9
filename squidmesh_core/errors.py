"""Error values the core returns, and the few exceptions it raises.

Expected outcomes are *values*: frozen dataclasses with a stable ``code``
returned inside ``returns.result.Failure``. Callers branch on them with
``match``. The codes are persisted and logged, so they never change.

Faults and bugs are *exceptions*::

    SquidmeshError                     base of everything SquidMesh raises
     +-- InvalidWorkflowError          a workflow definition failed validation (also ValueError)
     +-- NonRetryableError             raised by a step: fail the attempt, never retry it
     +-- InvariantViolatedError        the core met a state that cannot happen: a bug
     +-- (shell) BackendError ...      defined in squidmesh_backends.errors
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, TypeAlias


def shown(value: object, limit: int = 80) -> str:
    r"""``value`` quoted for a message: escaped, and cut to ``limit`` characters.

    >>> shown("a\x00b")
    "'a\\x00b'"
    """
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


class SquidmeshError(Exception):
    """Base class of every exception SquidMesh raises."""


class InvariantViolatedError(SquidmeshError):
    """The core met a state or event combination that cannot happen: a bug."""


class NonRetryableError(SquidmeshError):
    """Raise it (or a subclass) from a step to fail the attempt without any retry.

    ``code`` (optional) is kept with the failure, like any exception's ``code``.
    """

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True, kw_only=True)
class DefinitionProblem:
    """One problem found while validating a workflow definition."""

    code: str
    """Stable snake_case identifier of the rule that failed."""
    message: str
    """Human-readable sentence naming the offending trigger, step or transition."""


class InvalidWorkflowError(SquidmeshError, ValueError):
    """A workflow definition is invalid; lists every problem at once."""

    def __init__(self, workflow: str, problems: tuple[DefinitionProblem, ...]) -> None:
        self.workflow = workflow
        self.problems = problems
        lines = "\n".join(f"- {p.message}" for p in problems)
        super().__init__(f"workflow {workflow!r} is invalid:\n{lines}")


@dataclass(frozen=True, slots=True, kw_only=True)
class DefinitionErrors:
    """Every problem of one workflow definition (the ``Failure`` of ``build_workflow``)."""

    code: ClassVar[str] = "invalid_workflow"
    workflow: str
    problems: tuple[DefinitionProblem, ...]

    def to_exception(self) -> InvalidWorkflowError:
        """Return the exception the friendly constructor raises."""
        return InvalidWorkflowError(self.workflow, self.problems)

    def describe(self) -> str:
        """One sentence for people."""
        return str(self.to_exception())


# ---------------------------------------------------------------- ids and lookups


@dataclass(frozen=True, slots=True, kw_only=True)
class InvalidRunId:
    """A run id that is not a canonical UUID string."""

    code: ClassVar[str] = "invalid_run_id"
    value: str

    def describe(self) -> str:
        """One sentence for people."""
        return f"{shown(self.value)} is not a run id"


@dataclass(frozen=True, slots=True, kw_only=True)
class InvalidJobId:
    """A job id that does not have the ``run/step/attempt`` shape."""

    code: ClassVar[str] = "invalid_job_id"
    value: str

    def describe(self) -> str:
        """One sentence for people."""
        return f"{shown(self.value)} is not a job id (run/step/attempt)"


@dataclass(frozen=True, slots=True, kw_only=True)
class InvalidLeaseToken:
    """A lease token that no id source could have minted (see ``parse_lease_token``)."""

    code: ClassVar[str] = "invalid_lease_token"
    value: str

    def describe(self) -> str:
        """One sentence for people."""
        return f"{shown(self.value)} is not a lease token"


@dataclass(frozen=True, slots=True, kw_only=True)
class NotFound:
    """No run with this id exists."""

    code: ClassVar[str] = "not_found"
    run_id: str

    def describe(self) -> str:
        """One sentence for people."""
        return f"no run {shown(self.run_id)}"


@dataclass(frozen=True, slots=True, kw_only=True)
class UnknownWorkflow:
    """No workflow with this name is registered."""

    code: ClassVar[str] = "unknown_workflow"
    workflow: str

    def describe(self) -> str:
        """One sentence for people."""
        return f"no workflow {shown(self.workflow)} is registered here"


@dataclass(frozen=True, slots=True, kw_only=True)
class UnknownTrigger:
    """The workflow declares no trigger with this name."""

    code: ClassVar[str] = "unknown_trigger"
    workflow: str
    trigger: str

    def describe(self) -> str:
        """One sentence for people."""
        return f"workflow {self.workflow} declares no trigger {shown(self.trigger)}"


@dataclass(frozen=True, slots=True, kw_only=True)
class UnknownStep:
    """The workflow declares no step with this name."""

    code: ClassVar[str] = "unknown_step"
    workflow: str
    step: str

    def describe(self) -> str:
        """One sentence for people."""
        return f"workflow {self.workflow} declares no step {self.step!r}"


# ---------------------------------------------------------------- payloads


@dataclass(frozen=True, slots=True, kw_only=True)
class FieldProblem:
    """A payload field whose value does not fit its declared type."""

    field: str
    expected: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class InvalidPayload:
    """A payload that does not satisfy the trigger's contract.

    All categories are collected at once; an empty tuple means "no problem of
    this kind". ``reason`` is set when the payload could not be read at all
    (not an object, not storable JSON, too large).
    """

    code: ClassVar[str] = "invalid_payload"
    workflow: str
    trigger: str
    missing: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()
    invalid: tuple[FieldProblem, ...] = ()
    reason: str | None = None

    def describe(self) -> str:
        """One line summarising every problem."""
        parts: list[str] = []
        if self.reason:
            parts.append(self.reason)
        if self.missing:
            parts.append("missing fields: " + ", ".join(self.missing))
        if self.unknown:
            parts.append("unknown fields: " + ", ".join(self.unknown))
        if self.invalid:
            parts.append(
                "invalid fields: " + ", ".join(f"{p.field} ({p.message})" for p in self.invalid)
            )
        return f"invalid payload for {self.workflow}/{self.trigger}: " + "; ".join(parts)


# ---------------------------------------------------------------- decisions


@dataclass(frozen=True, slots=True, kw_only=True)
class InvalidTransition:
    """The event asks for a status change the status table does not allow."""

    code: ClassVar[str] = "invalid_transition"
    run_id: str
    from_status: str
    to_status: str

    def describe(self) -> str:
        """One sentence for people."""
        return f"run {self.run_id} is {self.from_status}; it cannot move to {self.to_status}"


@dataclass(frozen=True, slots=True, kw_only=True)
class StaleDelivery:
    """A delivery or outcome for a job that is not (or no longer) live with that lease.

    Duplicate, late and forged broker messages all end here; the shell treats
    them as no-ops.
    """

    code: ClassVar[str] = "stale_delivery"
    job_id: str
    reason: str

    def describe(self) -> str:
        """One sentence for people."""
        return f"job {self.job_id} changed nothing: {self.reason}"


@dataclass(frozen=True, slots=True, kw_only=True)
class InvalidOption:
    """An argument outside its accepted range (a list limit, an unknown status, ...)."""

    code: ClassVar[str] = "invalid_option"
    option: str
    reason: str

    def describe(self) -> str:
        """One sentence for people."""
        return f"{self.option} {self.reason}"


@dataclass(frozen=True, slots=True, kw_only=True)
class InvalidReview:
    """An approval or rejection without a valid actor, or with an unusable note."""

    code: ClassVar[str] = "invalid_review"
    field: str
    reason: str

    def describe(self) -> str:
        """One sentence for people."""
        return f"the review's {self.field} {self.reason}"


@dataclass(frozen=True, slots=True, kw_only=True)
class InvalidStep:
    """The run is parked, but not at the kind of step this command resumes."""

    code: ClassVar[str] = "invalid_step"
    run_id: str
    step: str
    waiting_for: str
    """What the parked step waits for (``pause``, ``approval`` or ``signal``)."""
    expected: str
    """What the command resumes."""

    def describe(self) -> str:
        """One sentence for people."""
        return (
            f"run {self.run_id} waits at {self.step!r} for {self.waiting_for}, "
            f"not for {self.expected}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class UnknownSignal:
    """No step of the workflow waits for a signal with this name."""

    code: ClassVar[str] = "unknown_signal"
    workflow: str
    signal: str

    def describe(self) -> str:
        """One sentence for people."""
        return f"no step of {self.workflow} waits for a signal {shown(self.signal)}"


@dataclass(frozen=True, slots=True, kw_only=True)
class InvalidResume:
    """An unblock without a valid actor, or with an unusable note or key."""

    code: ClassVar[str] = "invalid_resume"
    field: str
    reason: str

    def describe(self) -> str:
        """One sentence for people."""
        return f"the unblock's {self.field} {self.reason}"


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalNotAwaited:
    """No step the run may still reach waits for this signal (or its wait timed out)."""

    code: ClassVar[str] = "signal_not_awaited"
    run_id: str
    signal: str
    reason: str

    def describe(self) -> str:
        """One sentence for people."""
        return f"run {self.run_id} takes no signal {shown(self.signal)}: {self.reason}"


@dataclass(frozen=True, slots=True, kw_only=True)
class UnsafeReplay:
    """A replay would run again steps whose side effects cannot be undone."""

    code: ClassVar[str] = "unsafe_replay"
    run_id: str
    steps: tuple[str, ...]
    """The completed steps that were ``irreversible`` or not compensatable."""

    def describe(self) -> str:
        """One sentence for people."""
        named = ", ".join(repr(s) for s in self.steps)
        return (
            f"replaying run {self.run_id} would run again {named}, which cannot be undone; "
            "replay with allow_irreversible=True (--allow-irreversible) to do it anyway"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class InvalidSignalPayload:
    """A signal payload that does not satisfy the model of the steps waiting for it."""

    code: ClassVar[str] = "invalid_signal_payload"
    workflow: str
    signal: str
    reason: str

    def describe(self) -> str:
        """One sentence for people."""
        return f"signal {shown(self.signal)}: {self.reason}"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunNotActive:
    """The run is finished (or being cancelled) and accepts no more signals."""

    code: ClassVar[str] = "run_not_active"
    run_id: str
    status: str

    def describe(self) -> str:
        """One sentence for people."""
        return f"run {self.run_id} is {self.status} and accepts no more signals"


@dataclass(frozen=True, slots=True, kw_only=True)
class IdempotencyKeyReused:
    """The idempotency key was already used on this run by another command."""

    code: ClassVar[str] = "idempotency_key_reused"
    run_id: str
    idempotency_key: str
    command: str
    """The command that used the key first."""

    def describe(self) -> str:
        """One sentence for people."""
        return (
            f"idempotency key {self.idempotency_key!r} was already used on run {self.run_id} "
            f"by a {self.command} command"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandLimit:
    """The run holds as many audit entries (or waiting signals) as it may."""

    code: ClassVar[str] = "command_limit"
    run_id: str
    what: str
    limit: int

    def describe(self) -> str:
        """One sentence for people."""
        return f"run {self.run_id} already holds {self.limit} {self.what}"


@dataclass(frozen=True, slots=True, kw_only=True)
class RepeatedCommand:
    """The same command with the same idempotency key was accepted before.

    Not an error for callers: the runtime answers with the first receipt,
    ``entry`` (an :class:`~squidmesh_core.state.AuditEntry`).
    """

    code: ClassVar[str] = "repeated_command"
    run_id: str
    entry: object

    def describe(self) -> str:
        """One sentence for people."""
        return f"run {self.run_id} already took this command with this idempotency key"


@dataclass(frozen=True, slots=True, kw_only=True)
class UndecodableRecord:
    """A persisted primitive that does not decode into a core value."""

    code: ClassVar[str] = "undecodable_record"
    path: str
    reason: str

    def describe(self) -> str:
        """One sentence for people."""
        return f"the stored record does not decode at {self.path}: {self.reason}"


CommandRefused: TypeAlias = (
    InvalidTransition
    | InvalidReview
    | InvalidResume
    | InvalidOption
    | InvalidStep
    | UnknownStep
    | UnknownSignal
    | SignalNotAwaited
    | InvalidSignalPayload
    | RunNotActive
    | IdempotencyKeyReused
    | CommandLimit
)
"""Why the core refused an operator command."""

Rejected: TypeAlias = (
    InvalidRunId
    | InvalidPayload
    | UnknownTrigger
    | UnsafeReplay
    | StaleDelivery
    | CommandRefused
    | RepeatedCommand
)
"""Why ``decide`` refused an event. The state is unchanged in every case."""


# ---------------------------------------------------------------- stores and runtime


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionConflict:
    """The run changed since it was loaded; reload and decide again."""

    code: ClassVar[str] = "version_conflict"
    run_id: str
    expected: int

    def describe(self) -> str:
        """One sentence for people."""
        return f"run {self.run_id} changed since version {self.expected} was read"


@dataclass(frozen=True, slots=True, kw_only=True)
class DuplicateRun:
    """A run with this id, or this idempotency key for the workflow, already exists."""

    code: ClassVar[str] = "duplicate_run"
    run_id: str
    existing_run_id: str

    def describe(self) -> str:
        """One sentence for people."""
        return f"run {self.existing_run_id} already has this id or idempotency key"


@dataclass(frozen=True, slots=True, kw_only=True)
class StaleLease:
    """The lease token used to commit is no longer the job's current lease."""

    code: ClassVar[str] = "stale_lease"
    job_id: str

    def describe(self) -> str:
        """One sentence for people."""
        return f"job {self.job_id} is leased to another worker now"


CommitError: TypeAlias = VersionConflict | DuplicateRun | StaleLease
"""Why a store refused to commit a decision; nothing was written."""
