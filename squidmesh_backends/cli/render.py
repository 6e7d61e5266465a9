"""Turning runs into readable tables and JSON for the CLI."""

from __future__ import annotations

from collections.abc import Sequence

from squidmesh_core.codec import encode_failure
from squidmesh_core.jsonvalue import JsonValue
from squidmesh_core.state import StepRunState
from squidmesh_core.views import Run


def _time(value: object) -> JsonValue:
    return None if value is None else str(getattr(value, "isoformat", lambda: value)())


def step_json(step: StepRunState) -> dict[str, JsonValue]:
    return {
        "step": step.step,
        "status": step.status.value,
        "input": None if step.input is None else dict(step.input),
        "output": None if step.output is None else dict(step.output),
        "error": encode_failure(step.error),
        "attempts": [
            {
                "number": a.number,
                "status": a.status.value,
                "started_at": _time(a.started_at),
                "finished_at": _time(a.finished_at),
                "error": encode_failure(a.error),
            }
            for a in step.attempts
        ],
    }


def run_json(run: Run) -> dict[str, JsonValue]:
    """A JSON-able description of a run (with history when it was loaded)."""
    return {
        "id": run.id,
        "workflow": run.workflow,
        "trigger": run.trigger,
        "status": run.status.value,
        "payload": dict(run.payload),
        "context": dict(run.context),
        "current_steps": list(run.current_steps),
        "last_error": encode_failure(run.last_error),
        "created_at": _time(run.created_at),
        "updated_at": _time(run.updated_at),
        "version": run.version,
        "replayed_from": run.replayed_from,
        "idempotency_key": run.idempotency_key,
        "existing": run.existing,
        "history": None if run.history is None else [step_json(s) for s in run.history],
    }


def summary(run: Run) -> str:
    """One paragraph: id, workflow, status, timing, current steps, last error."""
    took = (run.updated_at - run.created_at).total_seconds()
    lines = [
        f"run {run.id}",
        f"  workflow  {run.workflow} (trigger {run.trigger})",
        f"  status    {run.status.value}{' (existing run for this key)' if run.existing else ''}",
        f"  created   {run.created_at.isoformat()}  ({took:.2f}s until last change)",
    ]
    if run.current_steps:
        lines.append(f"  current   {', '.join(run.current_steps)}")
    if run.replayed_from:
        lines.append(f"  replay of {run.replayed_from}")
    if run.last_error is not None:
        lines.append(f"  error     {run.last_error.kind}: {run.last_error.message}")
    return "\n".join(lines)


def timeline(run: Run) -> str:
    """Every attempt of every step, with start offset, duration and outcome."""
    rows = [("step", "attempt", "started", "took", "status", "note")]
    for step in run.history or ():
        if not step.attempts:
            rows.append((step.step, "-", "-", "-", step.status.value, ""))
        for attempt in step.attempts:
            started = (attempt.started_at - run.created_at).total_seconds()
            took = (
                "-"
                if attempt.finished_at is None
                else f"{(attempt.finished_at - attempt.started_at).total_seconds():.3f}s"
            )
            note = "" if attempt.error is None else f"{attempt.error.kind}: {attempt.error.message}"
            rows.append(
                (
                    step.step,
                    str(attempt.number),
                    f"+{started:.3f}s",
                    took,
                    attempt.status.value,
                    note,
                )
            )
    return table(rows)


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
        for row in rows
    )


def runs_table(runs: Sequence[Run]) -> str:
    rows = [("id", "workflow", "status", "created", "current")]
    rows.extend(
        (
            r.id,
            r.workflow,
            r.status.value,
            r.created_at.isoformat(timespec="seconds"),
            ",".join(r.current_steps),
        )
        for r in runs
    )
    return table(rows)
