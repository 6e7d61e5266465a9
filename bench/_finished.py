"""An event sink that tells when a run reached a final status (no polling)."""

from __future__ import annotations

import asyncio

from squidmesh_core.commands import Emit, Topic

FINAL = ("completed", "failed", "cancelled")


class Finished:
    """Hears ``run.transition`` events; ``wait`` returns once the run is final."""

    def __init__(self) -> None:
        self.done: dict[str, asyncio.Event] = {}
        self.recording = True
        """Off while nobody will wait (runs started in bulk): nothing is kept."""

    def publish(self, event: Emit) -> None:
        if not self.recording or event.topic is not Topic.RUN_TRANSITION:
            return
        if event.attributes.get("to") in FINAL:
            self.done.setdefault(event.run_id, asyncio.Event()).set()

    async def wait(self, run_id: str) -> None:
        await self.done.setdefault(run_id, asyncio.Event()).wait()
        del self.done[run_id]
