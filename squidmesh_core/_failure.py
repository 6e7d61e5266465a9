"""Failure sanitising: a step's failure made storable before it enters the state.

Rules:

1. **Never refuse a failure.** Steps build failures from arbitrary data; a field
   that cannot be stored is replaced by a description of the problem, so a
   failing step can never wedge its run.
2. **Text** has NUL and lone surrogates escaped, and is cut to
   ``MAX_FAILURE_TEXT`` characters; ``kind`` to 100.
3. **Details** must be a bounded JSON object (``FAILURE_DETAIL_LIMITS``); otherwise
   they become ``{"unstorable_details": <why>}``.
4. **``retry_after``** is clamped to ``[0, MAX_DELAY]`` like every other delay.
"""

from __future__ import annotations

from returns.result import Success

from squidmesh_core.definition import WorkflowDefinition
from squidmesh_core.jsonvalue import (
    JsonLimits,
    JsonValue,
    check_json_object,
    make_storable_text,
)
from squidmesh_core.retry import clamp_delay
from squidmesh_core.state import StepFailure

MAX_FAILURE_TEXT = 4096
FAILURE_DETAIL_LIMITS = JsonLimits(max_bytes=64 * 1024, max_depth=16)


def storable_failure(failure: StepFailure) -> StepFailure:
    """``failure`` with every field made storable (see the module rules).

    >>> len(storable_failure(StepFailure(kind="k", message="x" * 5000)).message)
    4096
    """
    details = check_json_object(failure.details, limits=FAILURE_DETAIL_LIMITS)
    retry_after = failure.retry_after
    if retry_after is not None:
        retry_after = clamp_delay(retry_after)
    cleaned = StepFailure(
        kind=make_storable_text(failure.kind, limit=MAX_FAILURE_TEXT)[:100],
        message=make_storable_text(failure.message, limit=MAX_FAILURE_TEXT),
        retryable=bool(failure.retryable),
        retry_after=retry_after,
        details=(
            details.unwrap()
            if isinstance(details, Success)
            else {"unstorable_details": f"{details.failure().path} {details.failure().reason}"}
        ),
    )
    return failure if cleaned == failure else cleaned


def failure_attributes(failure: StepFailure) -> dict[str, JsonValue]:
    """The JSON description of a failure used in emitted events."""
    return {
        "kind": failure.kind,
        "message": failure.message,
        "retryable": failure.retryable,
    }


def routed_to_fail(step: str) -> StepFailure:
    """Why a run that a step's ``ok`` route sent to ``FAIL`` failed."""
    return StepFailure(
        kind="routed_to_fail",
        message=f"step {step!r} succeeded and its route ends the run as failed",
        retryable=False,
    )


def unknown_step(definition: WorkflowDefinition, step: str) -> StepFailure:
    """The failure recorded when a run meets a definition that no longer declares its step."""
    return StepFailure(
        kind="unknown_step",
        message=f"step {step!r} is no longer declared by workflow {definition.name!r}",
        retryable=False,
    )
