"""The one rule both stores' ``step_connection`` accessors follow."""

from __future__ import annotations

from typing import TypeVar

from squidmesh_backends.errors import ConfigurationError
from squidmesh_core.context import StepContext

T = TypeVar("T")


def transaction_of(ctx: StepContext, kind: type[T], database: str) -> T:
    """``ctx.transaction`` as a ``kind``, or a ``ConfigurationError`` saying what is missing."""
    conn = ctx.transaction
    if not isinstance(conn, kind):
        raise ConfigurationError(
            f"step {ctx.step!r} has no {database} transaction: declare it with "
            f"transaction=True and run it on the {database} store"
        )
    return conn
