"""A three-step workflow whose steps count how often each attempt really runs."""

from __future__ import annotations

import asyncio
from collections import Counter

from squidmesh_core import COMPLETE, StepContext, WorkflowDefinition, chain, manual, step, workflow

STEPS = ("one", "two", "three")


class CountingFlow:
    """``definition`` runs ``one -> two -> three``; ``calls`` counts (run, step, attempt)."""

    def __init__(self, name: str, *, delay: float = 0.0) -> None:
        self.calls: Counter[tuple[str, str, int]] = Counter()
        self.delay = delay
        self.definition: WorkflowDefinition = workflow(
            name,
            triggers=[manual()],
            steps=[step(s, self._step) for s in STEPS],
            transitions=chain(*STEPS, COMPLETE),
        )

    async def _step(self, data: dict[str, object], ctx: StepContext) -> dict[str, object]:
        self.calls[(ctx.run_id, ctx.step, ctx.attempt)] += 1
        await asyncio.sleep(self.delay)
        return {ctx.step: ctx.attempt}

    def every_attempt_ran_once(self, runs: int) -> bool:
        return len(self.calls) == runs * len(STEPS) and set(self.calls.values()) == {1}
