"""What a step receives besides its input: the :class:`StepContext`."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import overload

from squidmesh_core.ids import RunId
from squidmesh_core.jsonvalue import JsonObject, JsonValue


class ReadOnlyObject(Mapping[str, object]):
    """A read-only view of a JSON object: nested objects and arrays are read-only too.

    Nothing is copied; values are wrapped as they are read. ``dict(view)`` or
    ``copy.deepcopy`` gives a mutable copy.
    """

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, JsonValue]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> object:
        return read_only(self._data[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"ReadOnlyObject({dict(self._data)!r})"


class ReadOnlyArray(Sequence[object]):
    """A read-only view of a JSON array (equal to a list with the same items)."""

    __slots__ = ("_data",)

    def __init__(self, data: Sequence[JsonValue]) -> None:
        self._data = data

    @overload
    def __getitem__(self, index: int) -> object: ...
    @overload
    def __getitem__(self, index: slice[int | None, int | None, int | None]) -> Sequence[object]: ...
    def __getitem__(self, index: int | slice[int | None, int | None, int | None]) -> object:
        if isinstance(index, slice):
            return ReadOnlyArray(self._data[index])
        return read_only(self._data[index])

    def __len__(self) -> int:
        return len(self._data)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # like the list it shows

    def __repr__(self) -> str:
        return f"ReadOnlyArray({list(self._data)!r})"


def read_only(value: JsonValue) -> object:
    """``value`` with its objects and arrays wrapped in read-only views."""
    if isinstance(value, Mapping):
        return ReadOnlyObject(value)
    if isinstance(value, list | tuple):
        return ReadOnlyArray(value)
    return value


_NOTHING = ReadOnlyObject({})


@dataclass(frozen=True, slots=True, kw_only=True)
class StepContext:
    """Facts about the attempt being run, handed to every step as ``ctx``."""

    run_id: RunId
    workflow: str
    step: str
    attempt: int
    """1-based number of this attempt."""
    idempotency_key: str
    """Stable across every attempt of this step in this run: pass it to external systems."""
    started_at: datetime
    """When this attempt started (the runtime clock)."""
    schedule: JsonObject | None = None
    """For runs started by a cron trigger: ``id``, ``workflow``, ``trigger``,
    ``expression``, ``timezone`` and the nominal ``tick`` (ISO 8601, UTC)."""
    payload: Mapping[str, object] = field(default_factory=lambda: _NOTHING)
    """The run's payload, read-only all the way down, whatever ``input=`` keeps."""
    context: Mapping[str, object] = field(default_factory=lambda: _NOTHING)
    """The run's context as this attempt started (earlier steps' outputs), read-only."""
    transaction: object = None
    """For a ``transaction=True`` step: the store's open database transaction (a
    ``psycopg.AsyncConnection`` on PostgreSQL, a ``sqlite3.Connection`` on SQLite);
    its writes commit with the step's outcome, or not at all. ``None`` otherwise."""


@dataclass(frozen=True, slots=True)
class Recheck:
    """Return it from a step: "not yet"; the step runs again after ``after``.

    For polling an external state (is the payment settled?). A re-check uses no
    retry attempt; it is a durable timer, shown in the history as a ``deferred``
    attempt with ``reason``, and in ``explain_run``. A step may defer at most
    ``max_rechecks`` times (``step(..., max_rechecks=1000)``).
    """

    after: timedelta
    reason: str = ""


def step_idempotency_key(run_id: str, step: str) -> str:
    """The idempotency key of ``step`` in ``run_id`` (same for every attempt).

    >>> step_idempotency_key("r1", "charge")
    'squidmesh:r1:charge'
    """
    return f"squidmesh:{run_id}:{step}"
