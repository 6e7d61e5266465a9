"""The pinned public surface: the two front doors and the engine's protocol module.

Each list is written out in full, so adding or removing a name is a visible,
reviewed change to this file (httpx's ``test_exported_members``).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

import squidmesh_backends
import squidmesh_core
import squidmesh_core.protocol

CORE = [
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
"""``squidmesh_core``: what a workflow author or an API caller touches."""

PROTOCOL = [
    "ApproveRequested",
    "Attempt",
    "CancelJob",
    "CancelRequested",
    "Claim",
    "Clock",
    "Command",
    "CommitError",
    "Decision",
    "DuplicateRun",
    "Emit",
    "Event",
    "EventSink",
    "Executor",
    "Fence",
    "FinishJob",
    "GiveUp",
    "GiveUpReason",
    "IdSource",
    "InvalidJobId",
    "InvalidLeaseToken",
    "Job",
    "JobDelivered",
    "JobHandler",
    "JobId",
    "JobInsert",
    "JobKey",
    "JobMessage",
    "JobMove",
    "JobStart",
    "JobStatus",
    "JobWrites",
    "JsonProblem",
    "Lease",
    "LeaseExpired",
    "LeaseInfo",
    "LeaseToken",
    "LogLevel",
    "Operator",
    "OperatorEvent",
    "Outcome",
    "Parked",
    "RejectRequested",
    "Rejected",
    "ReplayRequested",
    "RescheduleJob",
    "RetryAt",
    "RetryDecision",
    "RunRequested",
    "RunState",
    "RunStore",
    "ScheduleJob",
    "SignalSent",
    "StaleDelivery",
    "StaleLease",
    "StartedAttempt",
    "StepDeferred",
    "StepFailed",
    "StepKind",
    "StepRunState",
    "StepSpec",
    "StepSucceeded",
    "Topic",
    "TransitionSpec",
    "TriggerKind",
    "TriggerSpec",
    "UnblockRequested",
    "UndecodableRecord",
    "VersionConflict",
    "WorkflowMode",
    "check_json",
    "check_json_object",
    "combine",
    "decide",
    "decide_delivery",
    "decide_outcome",
    "decide_retry",
    "decode_failure",
    "decode_job",
    "decode_run",
    "encode_failure",
    "encode_job",
    "encode_run",
    "explain",
    "job_id_for",
    "job_writes",
    "parse_job_id",
    "parse_job_message",
    "parse_lease_token",
    "parse_run_id",
    "step_input",
]
"""``squidmesh_core.protocol``: what a store, executor or sink author needs besides ``CORE``."""

BACKENDS = [
    "BackendError",
    "BackendUnavailableError",
    "Client",
    "ConfigurationError",
    "ContentionError",
    "FakeClock",
    "HttpRequest",
    "HttpTool",
    "InProcessExecutor",
    "MemoryRunStore",
    "MigrationRequiredError",
    "OpenTelemetrySink",
    "PostgresRunStore",
    "RandomIds",
    "Runtime",
    "RuntimeSettings",
    "SequenceIds",
    "SqliteRunStore",
    "StuckRunError",
    "SyncRuntime",
    "SystemClock",
    "TaskiqExecutor",
    "TimeSkippingRuntime",
    "Tool",
    "ToolError",
    "ToolErrorKind",
    "ToolResult",
    "Worker",
    "compose",
    "invoke",
    "migrate",
    "open_broker",
    "redis_stream_broker",
]
"""``squidmesh_backends``: what running workflows takes."""

BACKENDS_LAZY = {
    "HttpRequest",
    "HttpTool",
    "InProcessExecutor",
    "MemoryRunStore",
    "OpenTelemetrySink",
    "PostgresRunStore",
    "SqliteRunStore",
    "TaskiqExecutor",
    "Tool",
    "ToolError",
    "ToolErrorKind",
    "ToolResult",
    "compose",
    "invoke",
    "migrate",
    "open_broker",
    "redis_stream_broker",
}
"""The adapters (and the composition root that knows them): imported on first access."""

DRIVERS = ("psycopg", "psycopg_pool", "taskiq", "taskiq_redis", "redis", "httpx", "opentelemetry")
"""Libraries the front doors must not load until an adapter is touched."""

MODULES = [squidmesh_core, squidmesh_core.protocol, squidmesh_backends]
IDS = [module.__name__ for module in MODULES]


def sort_key(name: str) -> tuple[bool, str]:
    """Upper-case constants first, then everything in code-point order."""
    return (not name.isupper(), name)


def public_names(module: ModuleType) -> set[str]:
    """The public, non-module names bound in ``module`` right now."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, ModuleType) and name != "annotations"
    }


@pytest.mark.parametrize("module", MODULES, ids=IDS)
def test_all_is_sorted_and_unique(module: ModuleType) -> None:
    names = list(module.__all__)
    assert names == sorted(names, key=sort_key)
    assert len(names) == len(set(names))


@pytest.mark.parametrize("module", MODULES, ids=IDS)
def test_every_exported_name_exists(module: ModuleType) -> None:
    for name in module.__all__:
        assert getattr(module, name) is not None, name


@pytest.mark.parametrize("module", [squidmesh_core, squidmesh_core.protocol], ids=IDS[:2])
def test_every_public_name_is_exported(module: ModuleType) -> None:
    assert public_names(module) == set(module.__all__)


def test_every_public_backends_name_is_exported_eagerly_or_lazily() -> None:
    # Lazy names join the module's namespace once touched, so either may be bound.
    assert public_names(squidmesh_backends) - BACKENDS_LAZY == set(BACKENDS) - BACKENDS_LAZY
    assert set(squidmesh_backends.__all__) >= BACKENDS_LAZY
    assert set(dir(squidmesh_backends)) >= set(squidmesh_backends.__all__)


def test_the_core_door_is_pinned() -> None:
    assert squidmesh_core.__all__ == CORE


def test_the_protocol_module_is_pinned() -> None:
    assert squidmesh_core.protocol.__all__ == PROTOCOL


def test_the_backends_door_is_pinned() -> None:
    assert squidmesh_backends.__all__ == BACKENDS


def test_every_name_has_one_public_home_in_the_core() -> None:
    assert set(CORE).isdisjoint(PROTOCOL)


def test_the_protocol_module_defines_nothing_of_its_own() -> None:
    for name in PROTOCOL:
        value = getattr(squidmesh_core.protocol, name)
        assert getattr(value, "__module__", None) != "squidmesh_core.protocol", name


def test_the_protocol_module_documents_who_it_is_for() -> None:
    doc = squidmesh_core.protocol.__doc__ or ""
    assert "Stability" in doc
    assert "store" in doc


def test_a_lazy_name_is_the_adapter_itself() -> None:
    from squidmesh_backends.memory import MemoryRunStore
    from squidmesh_backends.runtime.bootstrap import compose

    assert squidmesh_backends.MemoryRunStore is MemoryRunStore
    assert squidmesh_backends.compose is compose


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        _ = squidmesh_backends.no_such_thing  # type: ignore[attr-defined]


def run_python(code: str, cwd: Path) -> list[str]:
    """Run ``code`` in a fresh interpreter; its last stdout line, split on spaces."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


LOADED = f"print(*sorted(set({DRIVERS!r}) & set(sys.modules)) or ['none'])"


def test_the_front_doors_load_no_driver(tmp_path: Path) -> None:
    code = f"""
        import sys

        import squidmesh_backends
        import squidmesh_core
        from squidmesh_backends import compose
        from squidmesh_core import COMPLETE, chain, manual, step, workflow

        hello = workflow(
            "demo.hello",
            triggers=[manual()],
            steps=[step("greet", lambda data, ctx: {{}})],
            transitions=chain("greet", COMPLETE),
        )
        compose(workflows=[hello], store="memory")
        compose(workflows=[hello], store="sqlite:{tmp_path / "runs.db"}")
        {LOADED}
    """
    assert run_python(code, Path(__file__).resolve().parent.parent) == ["none"]


def test_touching_an_adapter_loads_its_driver() -> None:
    code = f"""
        import sys

        import squidmesh_backends

        squidmesh_backends.PostgresRunStore
        {LOADED}
    """
    loaded = run_python(code, Path(__file__).resolve().parent.parent)
    assert "psycopg" in loaded
    assert "taskiq" not in loaded
