"""The workflows the benchmarks run: chains of no-op steps."""

from __future__ import annotations

from squidmesh_core import COMPLETE, StepContext, WorkflowDefinition, chain, manual, step, workflow


async def noop(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    return {}


def chain_of(n: int, prefix: str = "bench.steps") -> WorkflowDefinition:
    """A workflow named ``<prefix>.<n>`` of ``n`` sequential no-op steps ``s0``..."""
    names = [f"s{i}" for i in range(n)]
    return workflow(
        f"{prefix}.{n}",
        triggers=[manual()],
        steps=[step(name, noop) for name in names],
        transitions=chain(*names, COMPLETE),
    )
