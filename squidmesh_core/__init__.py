"""SquidMesh core: define workflows, and read what their runs did.

This is the authoring door: the DSL, retry policies, what a step receives and
returns, the run views and statuses, and the error values callers match on.
Run workflows with :mod:`squidmesh_backends`. People who extend the engine
(stores, executors, event sinks, or driving :func:`~squidmesh_core.protocol.decide`
by hand) import the rest from :mod:`squidmesh_core.protocol`.

Nothing in this package performs I/O, reads the clock, mints ids or draws
random numbers: time and ids are arguments, and every state change is a
``Decision`` value returned by ``decide``.
"""

from squidmesh_core._actions import NextAction
from squidmesh_core.context import Recheck, StepContext
from squidmesh_core.definition import COMPLETE, FAIL, WorkflowDefinition
from squidmesh_core.dsl import (
    approval,
    chain,
    cron,
    error,
    log,
    manual,
    ok,
    pause,
    step,
    wait,
    wait_for_signal,
    workflow,
)
from squidmesh_core.errors import (
    CommandLimit,
    DefinitionErrors,
    DefinitionProblem,
    FieldProblem,
    IdempotencyKeyReused,
    InvalidOption,
    InvalidPayload,
    InvalidResume,
    InvalidReview,
    InvalidRunId,
    InvalidSignalPayload,
    InvalidStep,
    InvalidTransition,
    InvalidWorkflowError,
    InvariantViolatedError,
    NonRetryableError,
    NotFound,
    RunNotActive,
    SignalNotAwaited,
    SquidmeshError,
    UnknownSignal,
    UnknownStep,
    UnknownTrigger,
    UnknownWorkflow,
    UnsafeReplay,
)
from squidmesh_core.explain import Explanation, Reason
from squidmesh_core.ids import IdempotencyKey, RunId
from squidmesh_core.jsonvalue import JsonLimits, JsonObject, JsonValue
from squidmesh_core.operations import ExpiredLease, PruneReport, RunCount, StoreStatus, WorkerSeen
from squidmesh_core.payload import Now, Today
from squidmesh_core.retry import Exponential, Fixed, Linear, Retry
from squidmesh_core.state import (
    AttemptStatus,
    AuditEntry,
    Compensation,
    OperatorCommand,
    ParkKind,
    RecoveryRoute,
    RecoveryStrategy,
    RunStatus,
    Signal,
    StepFailure,
    StepStatus,
)
from squidmesh_core.validation import build_workflow
from squidmesh_core.views import Receipt, Run, ScheduledJob

__all__ = [
    "COMPLETE",
    "FAIL",
    "AttemptStatus",
    "AuditEntry",
    "CommandLimit",
    "Compensation",
    "DefinitionErrors",
    "DefinitionProblem",
    "ExpiredLease",
    "Explanation",
    "Exponential",
    "FieldProblem",
    "Fixed",
    "IdempotencyKey",
    "IdempotencyKeyReused",
    "InvalidOption",
    "InvalidPayload",
    "InvalidResume",
    "InvalidReview",
    "InvalidRunId",
    "InvalidSignalPayload",
    "InvalidStep",
    "InvalidTransition",
    "InvalidWorkflowError",
    "InvariantViolatedError",
    "JsonLimits",
    "JsonObject",
    "JsonValue",
    "Linear",
    "NextAction",
    "NonRetryableError",
    "NotFound",
    "Now",
    "OperatorCommand",
    "ParkKind",
    "PruneReport",
    "Reason",
    "Receipt",
    "Recheck",
    "RecoveryRoute",
    "RecoveryStrategy",
    "Retry",
    "Run",
    "RunCount",
    "RunId",
    "RunNotActive",
    "RunStatus",
    "ScheduledJob",
    "Signal",
    "SignalNotAwaited",
    "SquidmeshError",
    "StepContext",
    "StepFailure",
    "StepStatus",
    "StoreStatus",
    "Today",
    "UnknownSignal",
    "UnknownStep",
    "UnknownTrigger",
    "UnknownWorkflow",
    "UnsafeReplay",
    "WorkerSeen",
    "WorkflowDefinition",
    "approval",
    "build_workflow",
    "chain",
    "cron",
    "error",
    "log",
    "manual",
    "ok",
    "pause",
    "step",
    "wait",
    "wait_for_signal",
    "workflow",
]
