"""Turning runs into readable tables and JSON for the CLI."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from squidmesh_core.codec import (
    encode_audit,
    encode_compensation,
    encode_failure,
    encode_parked,
    encode_recovery,
    encode_signals,
)
from squidmesh_core.explain import Explanation, describe_due
from squidmesh_core.jsonvalue import JsonValue
from squidmesh_core.state import AuditEntry, ParkKind, StepRunState, StepStatus
from squidmesh_core.views import Receipt, Run


def _time(value: object) -> JsonValue:
    return None if value is None else str(getattr(value, "isoformat", lambda: value)())


def step_json(step: StepRunState) -> dict[str, JsonValue]:
    return {
        "step": step.step,
        "status": step.status.value,
        "input": None if step.input is None else dict(step.input),
        "output": None if step.output is None else dict(step.output),
        "error": encode_failure(step.error),
        "parked": encode_parked(step.parked),
        "recovery": encode_recovery(step.recovery),
        "attempts": [
            {
                "number": a.number,
                "status": a.status.value,
                "started_at": _time(a.started_at),
                "finished_at": _time(a.finished_at),
                "error": encode_failure(a.error),
                "worker": a.worker,
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
        "parked_step": run.parked_step,
        "failed_step": run.failed_step,
        "jobs": [
            {
                "id": j.id,
                "step": j.step,
                "attempt": j.attempt,
                "due_at": _time(j.due_at),
                "status": j.status.value,
                "purpose": j.purpose,
            }
            for j in run.jobs
        ],
        "history": None if run.history is None else [step_json(s) for s in run.history],
        "audit": None if run.audit is None else encode_audit(run.audit),
        "signals": None if run.signals is None else encode_signals(run.signals),
        "receipt": None if run.receipt is None else receipt_json(run.receipt),
        "compensation": encode_compensation(run.compensation),
    }


def receipt_json(receipt: Receipt) -> dict[str, JsonValue]:
    """An operator command's receipt as JSON."""
    [entry] = encode_audit((receipt.entry,))
    return {"repeated": receipt.repeated, "entry": entry}


def receipt_line(receipt: Receipt) -> str:
    """``approve by ana at ...: paused -> running`` (and whether it was a repeat)."""
    entry = receipt.entry
    outcome = entry.outcome
    change = f"{outcome.get('from')} -> {outcome.get('to')}"
    repeat = " (repeated: the first receipt; nothing changed)" if receipt.repeated else ""
    return f"  command   {_entry_text(entry)}: {change}{repeat}"


def escaped(text: str) -> str:
    """``text`` with control characters escaped, so it cannot forge or recolour lines."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _entry_text(entry: AuditEntry) -> str:
    who = f" by {escaped(entry.actor)}" if entry.actor else ""
    key = f" [key {escaped(entry.idempotency_key)}]" if entry.idempotency_key else ""
    note = f" ({escaped(entry.note)})" if entry.note else ""
    return f"{entry.command.value}{who} at {entry.at.isoformat()}{note}{key}"


def summary(run: Run, *, now: datetime | None = None) -> str:
    """One paragraph: id, workflow, status, timing, current steps, due jobs, last error."""
    took = (run.updated_at - run.created_at).total_seconds()
    lines = [
        f"run {run.id}",
        f"  workflow  {run.workflow} (trigger {run.trigger})",
        f"  status    {run.status.value}{' (existing run for this key)' if run.existing else ''}",
        f"  created   {run.created_at.isoformat()}  ({took:.2f}s until last change)",
    ]
    if run.current_steps:
        lines.append(f"  current   {', '.join(run.current_steps)}")
    if run.parked_step:
        lines.append(f"  parked    at {run.parked_step}")
    for job in run.jobs:
        what = {"retry": f"retry {job.attempt}", "timeout": "timeout"}.get(job.purpose, "")
        label = "run deadline" if job.purpose == "deadline" else f"{job.step} {what}".strip()
        due = describe_due(job.due_at, now) if now is not None else job.due_at.isoformat()
        lines.append(f"  next      {label} due at {due}")
    if run.failed_step:
        lines.append(f"  failed at {run.failed_step}")
    if run.compensation is not None:
        lines.append(_compensation_line(run))
    if run.replayed_from:
        lines.append(f"  replay of {run.replayed_from}")
    if run.last_error is not None:
        lines.append(f"  error     {run.last_error.kind}: {run.last_error.message}")
    if run.receipt is not None:
        lines.append(receipt_line(run.receipt))
    return "\n".join(escaped(line) for line in lines)  # run data cannot add or restyle lines


def _compensation_line(run: Run) -> str:
    undo = run.compensation
    assert undo is not None
    if run.history is None:  # a command's receipt: the plan without the statuses
        steps = ", ".join(undo.plan)
    else:
        done = {s.step: s.status.value for s in run.history}
        steps = ", ".join(
            f"{name} {done.get(name + ':compensate', 'pending')}" for name in undo.plan
        )
    state = "finished" if undo.finished_at is not None else "compensating"
    return (
        f"  undo      {steps or 'waiting for a running step'}"
        f" ({state}; the run ends {undo.ends_as.value})"
    )


_WAITING = {
    ParkKind.PAUSE: "waiting to be unblocked",
    ParkKind.APPROVAL: "waiting for approval",
    ParkKind.SIGNAL: "waiting for a signal",
}


def _parked_row(run: Run, step: StepRunState) -> tuple[str, str, str, str, str, str, str]:
    parked = step.parked
    assert parked is not None
    started = (parked.since - run.created_at).total_seconds()
    done = step.status is not StepStatus.PARKED
    took = f"{(step.updated_at - parked.since).total_seconds():.3f}s" if done else "-"
    note = _WAITING[parked.kind] + (f" {parked.signal!r}" if parked.signal else "")
    record = (step.output or {}).get(parked.output_key or "", {})
    actor = record.get("actor") if isinstance(record, dict) else None
    if step.error is not None:
        note = f"{step.error.kind}: {step.error.message}"
    elif step.status is StepStatus.COMPLETED:
        note = {
            ParkKind.PAUSE: "unblocked",
            ParkKind.APPROVAL: f"approved by {actor}",
            ParkKind.SIGNAL: f"signal {parked.signal!r} received",
        }[parked.kind]
    elif step.status is StepStatus.CANCELLED:
        note = "cancelled while " + _WAITING[parked.kind]
    return (step.step, "-", f"+{started:.3f}s", took, step.status.value, "-", note)


def timeline(run: Run) -> RenderableType:
    """Every attempt of every step: start offset, duration, outcome, and the worker that ran it."""
    rows = [("step", "attempt", "started", "took", "status", "worker", "note")]
    for step in run.history or ():
        if step.parked is not None:
            rows.append(_parked_row(run, step))
        elif not step.attempts:
            rows.append((step.step, "-", "-", "-", step.status.value, "-", ""))
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
                    attempt.worker or "-",
                    note,
                )
            )
    shown = table(rows, status_column=4)
    if not run.audit:
        return shown
    trail = "  audit trail:\n" + "\n".join(f"    {_entry_text(e)}" for e in run.audit)
    return Group(shown, Text(trail))


def with_app(command: str | None, app: str | None) -> str | None:
    """``squidmesh run VERB ...`` with ``--app APP`` after the verb (what a user types)."""
    if command is None or app is None or not command.startswith("squidmesh run "):
        return command
    verb, _, rest = command.removeprefix("squidmesh run ").partition(" ")
    return f"squidmesh run {verb} --app {app} {rest}".rstrip()


def explanation_json(e: Explanation, app: str | None = None) -> dict[str, JsonValue]:
    """An explanation as JSON (CLI commands with ``--app app``)."""
    return {
        "run_id": e.run_id,
        "status": e.status.value,
        "reason": e.reason.value,
        "summary": e.summary,
        "step": e.step,
        "details": dict(e.details),
        "next_actions": [
            {
                "action": a.action,
                "description": a.description,
                "call": a.call,
                "command": with_app(a.command, app),
            }
            for a in e.next_actions
        ],
        "evidence": dict(e.evidence),
    }


def explanation_text(e: Explanation, app: str | None = None) -> str:
    """Why, what next, for people."""
    lines = [
        f"run {e.run_id} is {e.status.value}: {e.reason.value}",
        f"  {e.summary}",
    ]
    if e.next_actions:
        lines.append("  next:")
        for action in e.next_actions:
            how = f"   $ {with_app(action.command, app)}" if action.command else ""
            lines.append(f"    - {action.description}{how}")
    return "\n".join(escaped(line) for line in lines)


STATUS_STYLES = {
    "completed": "green",
    "succeeded": "green",
    "failed": "red",
    "compensation_failed": "bold red",
    "cancelled": "yellow",
    "cancelling": "yellow",
    "compensating": "yellow",
    "paused": "cyan",
    "parked": "cyan",
    "running": "blue",
}
"""Colours of statuses in tables (shown only on a terminal)."""


UNBROKEN = frozenset({"id", "created", "name", "started", "worker"})


def table(rows: Sequence[Sequence[str]], *, status_column: int | None = None) -> Table:
    """A borderless table: the first row is the header; cells are text, never markup."""
    shown = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for name in rows[0]:  # ids and times stay whole, to be copied; the rest may fold
        shown.add_column(name, overflow="fold", no_wrap=name in UNBROKEN)
    for row in rows[1:]:
        cells = [Text(escaped(cell)) for cell in row]
        if status_column is not None:
            cells[status_column].stylize(STATUS_STYLES.get(row[status_column], ""))
        shown.add_row(*cells)
    return shown


def runs_table(runs: Sequence[Run]) -> Table:
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
    return table(rows, status_column=2)


LIMIT = 200
"""Characters of a JSON value ``run show`` prints before it cuts the rest (``--full``)."""


def compact(value: object, *, full: bool) -> str:
    """``value`` as one line of JSON, cut at :data:`LIMIT` characters unless ``full``."""
    text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    if full or len(text) <= LIMIT:
        return text
    return f"{text[:LIMIT]}... ({len(text) - LIMIT} more characters; --full shows all)"


def data_section(run: Run, *, full: bool) -> str:
    """Payload, context and each step's output, one line each (cut unless ``full``)."""
    lines = [
        f"  payload   {escaped(compact(dict(run.payload), full=full))}",
        f"  context   {escaped(compact(dict(run.context), full=full))}",
    ]
    outputs = [s for s in run.history or () if s.output is not None]
    if outputs:
        lines.append("  outputs:")
        lines.extend(
            f"    {escaped(s.step)}: {escaped(compact(dict(s.output or {}), full=full))}"
            for s in outputs
        )
    return "\n".join(lines)
