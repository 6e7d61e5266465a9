"""Render a workflow definition as a Mermaid flowchart (pure text)."""

from __future__ import annotations

from squidmesh_core.definition import COMPLETE, ENDS, StepKind, WorkflowDefinition, WorkflowMode

_SHAPES = {
    StepKind.ACTION: ("[", "]"),
    StepKind.WAIT: ("([", "])"),
    StepKind.LOG: ("[/", "/]"),
    StepKind.PAUSE: ("{{", "}}"),
    StepKind.APPROVAL: ("{{", "}}"),
    StepKind.SIGNAL: ("{{", "}}"),
}


def to_mermaid(definition: WorkflowDefinition) -> str:
    """A ``flowchart TD`` diagram: steps as nodes, ``ok``/``error``/``after`` as edges.

    >>> from squidmesh_core import chain, manual, step, workflow
    >>> wf = workflow("w", triggers=[manual()], steps=[step("a", print)],
    ...               transitions=chain("a", "complete"))
    >>> print(to_mermaid(wf))
    flowchart TD
      start((start)) --> a
      a["a"]
      a -->|ok| complete((complete))
    """
    lines = ["flowchart TD"]
    for entry in definition.entry_steps:
        lines.append(f"  start((start)) --> {entry}")
    for spec in definition.steps:
        left, right = _SHAPES[spec.kind]
        label = spec.name
        if spec.kind.parks:
            label = f"{spec.name}: {spec.kind.value}" + (f" {spec.signal}" if spec.signal else "")
        elif spec.kind is StepKind.WAIT and spec.duration is not None:
            label = f"{spec.name}: wait {spec.duration}"
        elif spec.retry is not None:
            label = f"{spec.name} (x{spec.retry.max_attempts})"
        lines.append(f'  {spec.name}{left}"{label}"{right}')
    if definition.mode is WorkflowMode.DEPENDENCIES:
        for spec in definition.steps:
            lines.extend(f"  {dep} --> {spec.name}" for dep in spec.after)
        dependents = {dep for spec in definition.steps for dep in spec.after}
        for spec in definition.steps:
            if spec.name not in dependents:
                lines.append(f"  {spec.name} --> {COMPLETE}(({COMPLETE}))")
        return "\n".join(lines)
    for transition in definition.transitions:
        target = f"{transition.to}(({transition.to}))" if transition.to in ENDS else transition.to
        arrow = "-->" if transition.on.value == "ok" else "-.->"
        lines.append(f"  {transition.from_step} {arrow}|{transition.on.value}| {target}")
    for spec in definition.steps:
        if spec.on_timeout is not None:
            end = spec.on_timeout
            target = f"{end}(({end}))" if end in ENDS else end
            lines.append(f"  {spec.name} -.->|timeout| {target}")
    return "\n".join(lines)
