"""The workflows a client or worker knows, by name."""

from __future__ import annotations

from collections.abc import Iterable

from returns.result import Failure, Result, Success

from squidmesh_core.definition import WorkflowDefinition
from squidmesh_core.errors import UnknownWorkflow


class Registry:
    """Registered workflow definitions; two different definitions may not share a name."""

    def __init__(self, workflows: Iterable[WorkflowDefinition]) -> None:
        self._by_name: dict[str, WorkflowDefinition] = {}
        for definition in workflows:
            known = self._by_name.get(definition.name)
            if known is not None and known is not definition:
                raise ValueError(f"two different workflows are named {definition.name!r}")
            self._by_name[definition.name] = definition

    def lookup(self, workflow: object) -> Result[WorkflowDefinition, UnknownWorkflow]:
        """The registered definition for a name or definition (anything else is unknown)."""
        if not isinstance(workflow, str | WorkflowDefinition):
            return Failure(UnknownWorkflow(workflow=repr(workflow)[:80]))
        name = workflow.name if isinstance(workflow, WorkflowDefinition) else workflow
        found = self._by_name.get(name)
        if found is None or (isinstance(workflow, WorkflowDefinition) and found is not workflow):
            return Failure(UnknownWorkflow(workflow=str(name)))
        return Success(found)

    def as_dict(self) -> dict[str, WorkflowDefinition]:
        """A copy of the registry, by name."""
        return dict(self._by_name)
