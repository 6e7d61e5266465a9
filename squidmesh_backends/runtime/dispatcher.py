"""The dispatcher loop: claim due jobs with a fenced lease and hand them to the executor.

It sleeps until the next due job (bounded by the poll interval) and wakes early
when ``kick`` is called after a commit that scheduled a job due now. Faults are
logged and retried after a pause; they never end the loop silently.
"""

from __future__ import annotations

import asyncio
import contextlib

from squidmesh_backends.logs import get_logger
from squidmesh_backends.runtime.settings import RuntimeSettings
from squidmesh_core.ports import Clock, Executor, IdSource, RunStore

LOG = get_logger("squidmesh.dispatcher")


class Dispatcher:
    def __init__(
        self,
        *,
        store: RunStore,
        executor: Executor,
        clock: Clock,
        ids: IdSource,
        settings: RuntimeSettings,
    ) -> None:
        self.store = store
        self.executor = executor
        self.clock = clock
        self.ids = ids
        self.settings = settings
        self._wake = asyncio.Event()
        self._stopping = False
        self.claimed = 0

    def kick(self) -> None:
        """Look for due jobs now instead of at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def reset(self) -> None:
        """Allow ``run`` again after ``stop`` (a runtime may be started twice, on a new loop)."""
        self._stopping = False
        self._wake = asyncio.Event()

    async def run(self) -> None:
        while not self._stopping:
            # Clear before reading the store, so a kick during the pass is never lost.
            self._wake.clear()
            try:
                if self.executor.free_slots <= 0:
                    await self._pause(self.settings.poll_interval.total_seconds())
                    continue
                if await self.dispatch_once():
                    continue
                await self._sleep()
            except asyncio.CancelledError:
                raise
            except Exception:
                LOG.exception("dispatcher pass failed; retrying after the poll interval")
                await self._pause(self.settings.poll_interval.total_seconds())

    async def dispatch_once(self) -> bool:
        """Claim and submit one batch; ``True`` if the batch was full (more may be due)."""
        slots = min(self.executor.free_slots, self.settings.claim_batch)
        if slots <= 0:
            return False
        claims = await self.store.claim_due(
            now=self.clock.now(),
            limit=slots,
            lease_for=self.settings.lease,
            owner=self.settings.owner,
            mint=self.ids.new_lease_token,
        )
        for claim in claims:
            await self.executor.submit(claim.job_id, claim.lease_token)
            LOG.debug(
                "dispatched %s",
                claim.job_id,
                extra={"run_id": claim.run_id, "job_id": claim.job_id},
            )
        self.claimed += len(claims)
        return len(claims) == slots

    async def _sleep(self) -> None:
        delay = self.settings.poll_interval.total_seconds()
        upcoming = await self.store.next_due_at()
        if upcoming is not None:
            delay = min(delay, max((upcoming - self.clock.now()).total_seconds(), 0.0))
        await self._pause(delay)

    async def _pause(self, seconds: float) -> None:
        if self._wake.is_set():
            return
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
