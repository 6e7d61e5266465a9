"""The dispatcher loop: claim due jobs with a fenced lease and hand them to the executor.

It sleeps until the next due job (bounded by the poll interval) and wakes early
when its doorbell rings (a commit made work due now, an executor slot freed, or
the store heard of due jobs elsewhere). A store or broker outage is logged
once when it begins and once when it ends; any other fault is logged with its
traceback. Both are retried after the poll interval and never end the loop.
Claims that could not be submitted are released at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from squidmesh_backends.errors import BackendError
from squidmesh_backends.logs import get_logger
from squidmesh_backends.outage import Outage
from squidmesh_backends.probe import CLAIMED, NO_PROBE, Probe
from squidmesh_backends.runtime._doorbell import Doorbell
from squidmesh_backends.runtime.settings import RuntimeSettings
from squidmesh_core.ports import Claim, Clock, Executor, IdSource, RunStore

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
        doorbell: Doorbell,
        probe: Probe = NO_PROBE,
    ) -> None:
        self.store = store
        self.executor = executor
        self.clock = clock
        self.ids = ids
        self.settings = settings
        self.doorbell = doorbell
        self.probe = probe
        self._stopping = False
        self.outage = Outage("the store or the broker", logger="squidmesh.dispatcher")
        """Store and broker faults, reported once per outage (``squidmesh_backends.outage``)."""

    def stop(self) -> None:
        self._stopping = True
        self.doorbell.ring()

    def reset(self) -> None:
        """Allow ``run`` again after ``stop`` (a runtime may be started twice, on a new loop)."""
        self._stopping = False
        self.doorbell.reset()

    async def run(self) -> None:
        while not self._stopping:
            # Clear before reading the store, so a ring during the pass is never lost.
            self.doorbell.clear()
            try:
                if self.executor.free_slots <= 0:
                    await self._pause(self.settings.poll_interval.total_seconds())
                    continue
                full = await self.dispatch_once()
                self.outage.reached()
                if full:
                    continue
                await self._sleep()
            except asyncio.CancelledError:
                raise
            except BackendError as exc:
                self.outage.failed(exc)
                await self._pause(self.settings.poll_interval.total_seconds())
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
        for sent, claim in enumerate(claims):
            try:
                await self.executor.submit(claim.job_id, claim.lease_token)
            except Exception:
                await self._hand_back(claims[sent:])
                raise
            LOG.debug(
                "dispatched %s",
                claim.job_id,
                extra={"run_id": claim.run_id, "job_id": claim.job_id},
            )
        self.probe.record(CLAIMED, len(claims))
        return len(claims) == slots

    async def _hand_back(self, unsent: Sequence[Claim]) -> None:
        """Release claims that could not be submitted, so they need not wait out their lease."""
        for claim in unsent:
            try:
                await self.store.release(claim.job_id, claim.lease_token)
            except Exception as exc:  # the store is down too: the lease expires instead
                LOG.debug("could not release %s: %s", claim.job_id, exc)

    async def _sleep(self) -> None:
        delay = self.settings.poll_interval.total_seconds()
        upcoming = await self.store.next_due_at()
        if upcoming is not None:
            delay = min(delay, max((upcoming - self.clock.now()).total_seconds(), 0.0))
        await self._pause(delay)

    async def _pause(self, seconds: float) -> None:
        await self.doorbell.wait(seconds)
