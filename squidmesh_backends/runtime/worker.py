"""``Worker``: claims due jobs and runs their steps. Started only where work is done.

A worker owns the delivery path: the dispatcher loop that claims due jobs
under fenced leases, the executor it hands them to, the delivery of each job
(heartbeats and the inline chain, in ``_delivery``), the store's wake-up
notices, and the cron loop. It commits through its :class:`Client`, so a
worker and the client beside it share one ledger, registry and doorbell.

Lifecycle: ``start`` opens the store, starts the executor (which rings the
doorbell when a slot frees), the dispatcher, the store's ``watch`` and the cron
loop, and reports the worker to the store (again every ``heartbeat_every``, see
``_presence``); ``stop`` stops claiming, lets running steps finish within the
shutdown timeout, releases the leases of those that did not and reports the
worker stopped (best-effort: a store that does not answer within a couple of
seconds does not hold the shutdown up).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from returns.result import Failure

from squidmesh_backends.errors import ConfigurationError
from squidmesh_backends.logs import get_logger
from squidmesh_backends.probe import NO_PROBE, Probe
from squidmesh_backends.runtime._delivery import Delivery, JobOutcome, OnNext
from squidmesh_backends.runtime._presence import Presence, worker_details
from squidmesh_backends.runtime._refusals import Refusals
from squidmesh_backends.runtime.client import Client
from squidmesh_backends.runtime.cron import CronLoop, active_schedules
from squidmesh_backends.runtime.dispatcher import Dispatcher
from squidmesh_backends.runtime.settings import default_owner
from squidmesh_core.definition import WorkflowDefinition
from squidmesh_core.ids import LEASE_TOKEN_PATTERN, JobId, LeaseToken, parse_lease_token
from squidmesh_core.ports import Executor

LOG = get_logger("squidmesh.runtime")


class Worker:
    """The delivery path over a client's store (see the module docstring).

    Args:
        client: the client whose store, ledger and doorbell the worker uses.
        executor: where claimed jobs run.
        cron: the workflows (names or definitions) whose cron triggers this
            worker starts while it runs.
        probe: receives the worker's counts (claims, inline steps).

    Raises:
        ConfigurationError: the client's id source mints lease tokens that
            ``parse_lease_token`` refuses (every delivery would be dropped).
    """

    def __init__(
        self,
        *,
        client: Client,
        executor: Executor,
        cron: Iterable[str | WorkflowDefinition] = (),
        probe: Probe = NO_PROBE,
    ) -> None:
        sample = client.ids.new_lease_token()
        if isinstance(parse_lease_token(sample), Failure):
            raise ConfigurationError(
                f"the id source minted the lease token {sample!r}; tokens must match"
                f" {LEASE_TOKEN_PATTERN.pattern} or every delivery is refused as forged"
            )
        self.client = client
        self.store = client.store
        self.settings = client.settings
        self.executor = executor
        self.refusals = Refusals(publisher=client.publisher, probe=probe)
        self.delivery = Delivery(client=client, refusals=self.refusals, probe=probe)
        self.dispatcher = Dispatcher(
            store=client.store,
            executor=executor,
            clock=client.clock,
            ids=client.ids,
            settings=client.settings,
            doorbell=client.doorbell,
            probe=probe,
        )
        activated = tuple(cron)
        self.cron_loop: CronLoop | None = None
        """Starts cron runs while the worker runs (only for the workflows in ``cron``)."""
        if activated:
            self.cron_loop = CronLoop(
                client,
                active_schedules(client, activated, now=client.clock.now()),
                misfire_window=self.settings.cron_misfire_window,
                poll=self.settings.poll_interval,
            )
        self.presence = Presence(
            store=client.store,
            clock=client.clock,
            name=self.settings.owner,
            every=self.settings.heartbeat_every.total_seconds(),
            details=worker_details(executor, list(client.workflows)),
            shared=self.settings.owner == default_owner(),
        )
        """This worker's row in the store (written at start, while running, at stop)."""
        self._tasks: list[asyncio.Task[None]] = []
        self._holding: dict[tuple[JobId, LeaseToken], tuple[JobId, LeaseToken]] = {}
        """For a delivery that went on inline: the lease it holds now."""

    @property
    def running(self) -> bool:
        """Whether ``start`` ran and ``stop`` has not."""
        return bool(self._tasks)

    async def execute(
        self,
        job_id: str,
        lease_token: str,
        *,
        heartbeat: bool = True,
        inline: bool | None = None,
        on_next: OnNext = lambda job, token: None,
    ) -> JobOutcome:
        """Deliver one claimed job (and, inline, the steps it hands on); see ``_delivery``.

        ``inline`` defaults to ``settings.inline_next_step``.
        """
        return await self.delivery.execute(
            job_id,
            lease_token,
            heartbeat=heartbeat,
            inline=self.settings.inline_next_step if inline is None else inline,
            on_next=on_next,
        )

    async def execute_job(
        self, job_id: str, lease_token: str, *, heartbeat: bool = True
    ) -> JobOutcome:
        """Deliver one claimed job and nothing after it (no inline chain)."""
        return await self.execute(job_id, lease_token, heartbeat=heartbeat, inline=False)

    async def _handle(self, job_id: JobId, lease_token: LeaseToken) -> None:
        key = (job_id, lease_token)

        def moved(job: JobId, token: LeaseToken) -> None:
            self._holding[key] = (job, token)

        try:
            await self.execute(job_id, lease_token, on_next=moved)
        except asyncio.CancelledError:
            raise  # stop() cancelled us: it still needs the lease we hold
        except BaseException:
            self._holding.pop(key, None)
            raise
        else:
            self._holding.pop(key, None)

    async def start(self) -> None:
        """Start executing: open the store, accept jobs, claim them, listen, run cron, report."""
        if self._tasks:
            return
        await self.store.open()  # a store closed by an earlier stop is opened again
        # Everything that may fail is built before any task runs: a failed start
        # leaves nothing behind.
        watching = self.store.watch(self.client.doorbell.ring)
        try:
            await self.executor.start(
                self._handle,
                slot_freed=self.client.doorbell.ring,
                refused=self.refusals.malformed,
            )
        except BaseException:
            watching.close()
            raise
        self.dispatcher.reset()
        await self.presence.started()  # never raises: an outage is logged
        self._tasks = [
            asyncio.create_task(self.dispatcher.run(), name="squidmesh-dispatcher"),
            asyncio.create_task(watching, name="squidmesh-wakeups"),
            asyncio.create_task(self.presence.run(), name="squidmesh-presence"),
        ]
        if self.cron_loop is not None:
            self.cron_loop.activated_at = self.client.clock.now()
            self._tasks.append(asyncio.create_task(self.cron_loop.run(), name="squidmesh-cron"))

    async def stop(self) -> None:
        """Stop claiming, let running steps finish in the shutdown timeout, release the rest.

        Then the worker is reported stopped.
        """
        if not self._tasks:
            return
        dispatcher, *background = self._tasks
        self._tasks = []
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        self.dispatcher.stop()
        await asyncio.gather(dispatcher, return_exceptions=True)
        unfinished = await self.executor.stop(timeout=self.settings.shutdown_timeout)
        for delivered in unfinished:
            job_id, token = self._holding.pop(delivered, delivered)
            released = await self.store.release(job_id, token)
            LOG.warning("released %s on shutdown (held: %s)", job_id, released)
        await self.presence.stopped()  # best-effort, a couple of seconds at most
