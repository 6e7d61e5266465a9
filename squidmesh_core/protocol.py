"""The engine's protocol: for people who extend SquidMesh, not for workflow authors.

Import from here when you write a store (``RunStore``), an executor
(``Executor``), an event sink (``EventSink``), a clock or id source, or when you
drive the pure core yourself (``decide`` and the events it takes, the
``Decision`` and commands it returns). Workflow authors and API callers need
only :mod:`squidmesh_core`; this module holds none of its names, so an
extension imports from both::

    from squidmesh_core import RunId, RunStatus
    from squidmesh_core.protocol import Decision, Fence, RunState, RunStore

Stability: these names are public, but they follow the engine. A minor release
may add names here, add fields to the values, or add methods to the ports
(recorded in the changelog); code that only *reads* these values and implements
the ports as documented keeps working, while code that constructs the internal
state itself may have to follow. The promises each port makes are checked by
the contract suites in :mod:`squidmesh_core.testing.contracts`
(``RunStoreContract``, ``ExecutorContract``): run them against your adapter.

Every name is re-exported from the module that defines it; nothing is defined
here.
"""

from squidmesh_core.codec import (
    decode_failure,
    decode_job,
    decode_run,
    encode_failure,
    encode_job,
    encode_run,
)
from squidmesh_core.commands import (
    CancelJob,
    Command,
    Decision,
    Emit,
    FinishJob,
    Lease,
    RescheduleJob,
    ScheduleJob,
    StartedAttempt,
    Topic,
    combine,
)
from squidmesh_core.decide import decide, step_input
from squidmesh_core.definition import (
    LogLevel,
    Outcome,
    StepKind,
    StepSpec,
    TransitionSpec,
    TriggerKind,
    TriggerSpec,
    WorkflowMode,
)
from squidmesh_core.errors import (
    CommitError,
    DuplicateRun,
    InvalidJobId,
    InvalidLeaseToken,
    Rejected,
    StaleDelivery,
    StaleLease,
    UndecodableRecord,
    VersionConflict,
)
from squidmesh_core.events import (
    ApproveRequested,
    CancelRequested,
    Event,
    JobDelivered,
    LeaseExpired,
    Operator,
    OperatorEvent,
    RejectRequested,
    ReplayRequested,
    RunRequested,
    SignalSent,
    StepDeferred,
    StepFailed,
    StepSucceeded,
    UnblockRequested,
)
from squidmesh_core.explain import LeaseInfo, explain
from squidmesh_core.handoff import decide_delivery, decide_outcome
from squidmesh_core.ids import (
    JobId,
    JobKey,
    JobMessage,
    LeaseToken,
    job_id_for,
    parse_job_id,
    parse_job_message,
    parse_lease_token,
    parse_run_id,
)
from squidmesh_core.jobwrites import JobInsert, JobMove, JobStart, JobWrites, job_writes
from squidmesh_core.jsonvalue import JsonProblem, check_json, check_json_object
from squidmesh_core.ports import (
    Claim,
    Clock,
    EventSink,
    Executor,
    Fence,
    IdSource,
    JobHandler,
    RunStore,
)
from squidmesh_core.retry import GiveUp, GiveUpReason, RetryAt, RetryDecision, decide_retry
from squidmesh_core.state import (
    Attempt,
    Job,
    JobStatus,
    Parked,
    RunState,
    StepRunState,
)

__all__ = [
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
