"""Legal status changes, as data.

``decide`` consults these tables for every status change it makes; a change
missing from a table is refused (``InvalidTransition``) or, when the core
itself would make it, raised as a bug (``InvariantViolatedError``). The
architecture guide draws its diagrams from these very mappings.
"""

from __future__ import annotations

from collections.abc import Mapping

from squidmesh_core.state import AttemptStatus, RunStatus, StepStatus

R = RunStatus
S = StepStatus
A = AttemptStatus

RUN_TRANSITIONS: Mapping[RunStatus, frozenset[RunStatus]] = {
    R.PENDING: frozenset({R.RUNNING, R.PAUSED, R.FAILED, R.CANCELLED, R.COMPENSATING}),
    R.RUNNING: frozenset(
        {R.RETRYING, R.PAUSED, R.FAILED, R.COMPLETED, R.CANCELLING, R.COMPENSATING}
    ),
    R.RETRYING: frozenset({R.RUNNING, R.FAILED, R.CANCELLING, R.COMPENSATING}),
    R.PAUSED: frozenset(
        {R.RUNNING, R.RETRYING, R.FAILED, R.COMPLETED, R.CANCELLED, R.COMPENSATING}
    ),
    R.CANCELLING: frozenset({R.CANCELLED, R.FAILED, R.COMPENSATING}),
    R.COMPENSATING: frozenset({R.FAILED, R.CANCELLED, R.COMPENSATION_FAILED}),
    R.FAILED: frozenset(),
    R.COMPLETED: frozenset(),
    R.CANCELLED: frozenset(),
    R.COMPENSATION_FAILED: frozenset(),
}

STEP_TRANSITIONS: Mapping[StepStatus, frozenset[StepStatus]] = {
    S.SCHEDULED: frozenset({S.RUNNING, S.PARKED, S.COMPLETED, S.FAILED, S.CANCELLED}),
    S.RUNNING: frozenset({S.SCHEDULED, S.COMPLETED, S.FAILED, S.RETRY_SCHEDULED, S.CANCELLED}),
    S.RETRY_SCHEDULED: frozenset({S.RUNNING, S.FAILED, S.CANCELLED}),
    S.PARKED: frozenset({S.COMPLETED, S.FAILED, S.CANCELLED}),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
}

ATTEMPT_TRANSITIONS: Mapping[AttemptStatus, frozenset[AttemptStatus]] = {
    A.RUNNING: frozenset({A.SUCCEEDED, A.FAILED, A.LOST, A.DEFERRED}),
    A.SUCCEEDED: frozenset(),
    A.DEFERRED: frozenset(),
    A.FAILED: frozenset(),
    A.LOST: frozenset(),
}


def run_transition_allowed(src: RunStatus, dst: RunStatus) -> bool:
    """Whether a run may move from ``src`` to ``dst`` (staying put is always allowed)."""
    return src == dst or dst in RUN_TRANSITIONS[src]


def step_transition_allowed(src: StepStatus, dst: StepStatus) -> bool:
    """Whether a step run may move from ``src`` to ``dst`` (staying put is always allowed)."""
    return src == dst or dst in STEP_TRANSITIONS[src]


def attempt_transition_allowed(src: AttemptStatus, dst: AttemptStatus) -> bool:
    """Whether an attempt may move from ``src`` to ``dst`` (staying put is always allowed)."""
    return src == dst or dst in ATTEMPT_TRANSITIONS[src]


def _markdown(
    title: str,
    table: Mapping[RunStatus, frozenset[RunStatus]]
    | Mapping[StepStatus, frozenset[StepStatus]]
    | Mapping[AttemptStatus, frozenset[AttemptStatus]],
) -> str:
    lines = [f"**{title}**", "", "| from | may move to |", "| --- | --- |"]
    for src, targets in table.items():
        ordered = [t.value for t in type(src) if t in targets]
        lines.append(f"| `{src.value}` | {', '.join(f'`{t}`' for t in ordered) or '(terminal)'} |")
    return "\n".join(lines)


def markdown_tables() -> str:
    """The three status tables rendered as Markdown (used to keep the docs true)."""
    return "\n\n".join(
        [
            _markdown("Run", RUN_TRANSITIONS),
            _markdown("Step run", STEP_TRANSITIONS),
            _markdown("Attempt", ATTEMPT_TRANSITIONS),
        ]
    )
