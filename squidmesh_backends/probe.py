"""The one instrumentation hook: counts that tests and benchmarks read.

Production code keeps no counters of its own. A component that has something
worth counting (a store's commits, a dispatcher's claims, a worker's inline
steps) takes a :class:`Probe` in its constructor and reports to it; the default
:data:`NO_PROBE` drops everything. :class:`Counters` keeps the totals and the
latest detail of each name, which is all the tests and ``bench/`` ask for.

Names reported (one source, here):

* ``COMMITS`` — write transactions a store committed (refused ones are not).
* ``STATEMENTS`` — statements those commits sent (PostgreSQL; an INSERT's rows count once).
* ``LAST_COMMIT`` — detail only: a one-line summary of each statement of the latest commit.
* ``CLAIMED`` — jobs a dispatcher claimed.
* ``INLINE_STEPS`` — steps a worker started on the inline path (no claim, no dispatcher).
* ``REFUSED`` — malformed or forged messages a worker refused (detail: the reason code).
* ``STALE`` — deliveries refused because their lease was no longer held (detail: the job id).
"""

from __future__ import annotations

from typing import Final, Protocol

COMMITS: Final = "commits"
STATEMENTS: Final = "statements"
LAST_COMMIT: Final = "last_commit"
CLAIMED: Final = "claimed"
INLINE_STEPS: Final = "inline_steps"
REFUSED: Final = "refused"
STALE: Final = "stale"


class Probe(Protocol):
    """Receives counts; must be cheap and must never raise."""

    def record(self, name: str, amount: int = 1, detail: object = None) -> None:
        """Add ``amount`` to ``name``; keep ``detail`` as its latest detail when given."""
        ...


class _NoProbe:
    def record(self, name: str, amount: int = 1, detail: object = None) -> None:
        return None


NO_PROBE: Final[Probe] = _NoProbe()
"""The default probe: records nothing."""


class Counters:
    """A probe that keeps totals (``counters[name]``) and latest details (``detail(name)``)."""

    def __init__(self) -> None:
        self.totals: dict[str, int] = {}
        self.details: dict[str, object] = {}

    def record(self, name: str, amount: int = 1, detail: object = None) -> None:
        self.totals[name] = self.totals.get(name, 0) + amount
        if detail is not None:
            self.details[name] = detail

    def __getitem__(self, name: str) -> int:
        return self.totals.get(name, 0)

    def detail(self, name: str) -> object:
        """The latest detail recorded under ``name`` (``None`` if none)."""
        return self.details.get(name)
