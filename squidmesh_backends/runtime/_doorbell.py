"""The doorbell: how commits, executors and store notices wake the dispatcher.

Whoever makes a job due now (a commit, a freed executor slot, a notice from
another process) rings it; the dispatcher waits on it between polls. Ringing is
idempotent and never blocks. It is handed to every party by constructor or as a
``start`` argument, never assigned afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib


class Doorbell:
    """A wake-up flag for one dispatcher, usable from any task on its loop."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None
        self._rung = False

    def ring(self) -> None:
        """Ask the dispatcher to look for due jobs now instead of at its next poll."""
        self._rung = True
        if self._event is not None:
            self._event.set()

    def clear(self) -> None:
        """Forget earlier rings (the dispatcher calls it before reading the store)."""
        self._rung = False
        if self._event is not None:
            self._event.clear()

    @property
    def rung(self) -> bool:
        """Whether it rang since the last ``clear``."""
        return self._rung

    def reset(self) -> None:
        """Bind to the running event loop (a runtime may be started again on a new one)."""
        self._event = asyncio.Event()
        if self._rung:
            self._event.set()

    async def wait(self, seconds: float) -> None:
        """Return when it rings or after ``seconds``, whichever comes first."""
        if self._rung:
            return
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        if self._event is None:
            self.reset()
        event = self._event
        assert event is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=seconds)
