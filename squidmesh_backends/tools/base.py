"""The tools boundary: how steps call the outside world and get typed outcomes back.

A tool is anything with a ``name`` and an async ``call(request, context)``
returning ``Result[ToolResult, ToolError]``. Steps go through :func:`invoke`,
which also turns a tool that raises or returns the wrong shape into an
``adapter_contract`` error, so a step always gets a value it can route on.
``ToolError.to_failure()`` makes the step failure that carries the same retry
semantics (``retryable``, ``retry_after``) into the core's retry policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Protocol

from returns.result import Failure, Result, Success

from squidmesh_core.context import StepContext
from squidmesh_core.jsonvalue import EMPTY_OBJECT, JsonObject, check_json_object
from squidmesh_core.state import StepFailure


class ToolErrorKind(StrEnum):
    """Stable categories of tool errors (they become the step failure's ``kind``)."""

    INVALID_REQUEST = "invalid_request"
    """The request was refused before any I/O."""
    HTTP = "http"
    """The remote answered with an error status."""
    TIMEOUT = "timeout"
    """Connecting or reading took too long."""
    TRANSPORT = "transport"
    """The connection failed or broke (refused, reset, protocol error)."""
    INVALID_RESPONSE = "invalid_response"
    """The remote answered, but not in a form the tool can decode."""
    ADAPTER_CONTRACT = "adapter_contract"
    """The tool itself misbehaved: it raised, or returned something that is not a Result."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolResult:
    """A successful call: ``value`` is JSON the step may store."""

    tool: str
    value: JsonObject


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolError:
    """A failed call, with the retry semantics the step should get."""

    tool: str
    kind: ToolErrorKind
    message: str
    retryable: bool
    details: JsonObject = field(default_factory=lambda: EMPTY_OBJECT)
    retry_after: timedelta | None = None
    """When the remote said how long to wait (``Retry-After``)."""

    @property
    def code(self) -> str:
        """Stable error code, ``tool_<kind>``."""
        return f"tool_{self.kind.value}"

    def to_failure(self) -> StepFailure:
        """The step failure to return (``Failure(error.to_failure())``)."""
        return StepFailure(
            kind=self.kind.value,
            message=self.message,
            retryable=self.retryable,
            retry_after=self.retry_after,
            details={**self.details, "tool": self.tool},
        )


class Tool(Protocol):
    """A named adapter to something outside the workflow."""

    @property
    def name(self) -> str:
        """Name used in errors and failure details."""
        ...

    async def call(
        self, request: object, context: StepContext | None
    ) -> Result[ToolResult, ToolError]:
        """Perform the request; expected outcomes are values, never exceptions."""
        ...


async def invoke(
    tool: Tool, request: object, *, context: StepContext | None = None
) -> Result[ToolResult, ToolError]:
    """Call ``tool``; its misbehaviour comes back as an ``adapter_contract`` error."""
    name = str(getattr(tool, "name", type(tool).__name__))
    try:
        outcome = await tool.call(request, context)
    except Exception as exc:
        return Failure(_contract(name, f"raised {type(exc).__name__}: {exc}"))
    match outcome:
        case Success(ToolResult() as result):
            checked = check_json_object(result.value)
            if isinstance(checked, Failure):
                problem = checked.failure()
                reason = f"value{problem.path[1:]} {problem.reason}"
                return Failure(
                    _contract(name, f"returned a value that is not storable JSON: {reason}")
                )
            return Success(result)
        case Failure(ToolError() as error):
            return Failure(error)
    return Failure(_contract(name, f"returned {type(outcome).__name__}, not a Result"))


def _contract(tool: str, message: str) -> ToolError:
    return ToolError(
        tool=tool,
        kind=ToolErrorKind.ADAPTER_CONTRACT,
        message=f"tool {tool!r} {message}",
        retryable=False,
    )
