"""``squidmesh status``, ``doctor`` and ``prune``: the store as a whole, for operators.

``doctor`` checks, in this order, and reports every problem it finds (exit 3
when there is one, so it can gate a deploy):

1. **schema**: the store's schema version is the one this SquidMesh expects.
2. **expired leases**: no job's lease ended longer than ``--overdue`` ago
   without a worker reclaiming it (a lease that just ended is the next
   claim's to take).
3. **overdue jobs**: no job has been due for longer than ``--overdue``.
4. **workers**: with jobs due, some worker was seen in the last five minutes.
5. **stuck runs**: no unfinished run is explained as stuck (a lease that
   expired, a workflow this application no longer registers, a paused run
   whose resume target is gone). The runs explained are the newest
   ``--stuck-limit`` of each unfinished status and every run holding an
   expired lease; a cut list is said in a note.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from squidmesh_backends.cli.console import console, print_text, show
from squidmesh_backends.cli.render import STATUS_STYLES, escaped, table
from squidmesh_backends.cli.runs import emit, refuse
from squidmesh_backends.errors import MigrationRequiredError
from squidmesh_backends.runtime.runtime import Runtime
from squidmesh_core.explain import Reason
from squidmesh_core.jsonvalue import JsonValue
from squidmesh_core.operations import StoreStatus
from squidmesh_core.state import RunStatus

WORKERS_WITHIN = timedelta(minutes=5)
"""How recently a worker must have reported itself to count as seen."""
EXPIRING_WITHIN = timedelta(seconds=30)
STUCK = frozenset(
    {
        Reason.LEASE_EXPIRED,
        Reason.PAUSED_WITH_UNAVAILABLE_WORKFLOW,
        Reason.PAUSED_WITH_INVALID_RESUME_TARGET,
    }
)
"""Explanations ``doctor`` counts as a stuck run."""
UNFINISHED = (
    RunStatus.PENDING,
    RunStatus.RUNNING,
    RunStatus.PAUSED,
    RunStatus.CANCELLING,
    RunStatus.COMPENSATING,
)


def _span(length: timedelta) -> str:
    """``30d``, ``12h``, ``90s``: a duration the way it is typed."""
    total = length.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if total >= size and total % size == 0:
            return f"{total / size:g}{unit}"
    return f"{total:g}s"


def _ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "-"
    seconds = (now - moment).total_seconds()
    return f"{seconds:.1f}s ago" if seconds >= 0 else f"in {-seconds:.1f}s"


def status_json(snapshot: StoreStatus, now: datetime) -> dict[str, JsonValue]:
    """The snapshot as JSON (times in ISO 8601, lateness in seconds)."""
    oldest = snapshot.oldest_due_at
    return {
        "runs": [
            {"workflow": c.workflow, "status": c.status.value, "count": c.count}
            for c in snapshot.runs
        ],
        "total_runs": snapshot.total_runs,
        "due_jobs": snapshot.due_jobs,
        "oldest_due_at": None if oldest is None else oldest.isoformat(),
        "oldest_due_lateness_seconds": None
        if oldest is None
        else round(max((now - oldest).total_seconds(), 0.0), 3),
        "leased_jobs": snapshot.leased_jobs,
        "leases_expiring": snapshot.leases_expiring,
        "leases_expired": snapshot.leases_expired,
        "expired_leases": [
            {
                "job_id": e.job_id,
                "run_id": e.run_id,
                "step": e.step,
                "owner": e.owner,
                "expired_at": e.expired_at.isoformat(),
            }
            for e in snapshot.expired_leases
        ],
        "workers": [
            {
                "name": w.name,
                "first_seen": w.first_seen.isoformat(),
                "last_seen": w.last_seen.isoformat(),
                "stopped_at": None if w.stopped_at is None else w.stopped_at.isoformat(),
                "details": dict(w.details),
            }
            for w in snapshot.workers
        ],
        "schema_version": snapshot.schema_version,
        "schema_expected": snapshot.schema_expected,
    }


def _runs_by_workflow(snapshot: StoreStatus) -> Table:
    present = [s for s in RunStatus if any(c.status is s for c in snapshot.runs)]
    shown = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    shown.add_column("workflow")
    for status in present:
        shown.add_column(status.value, justify="right", style=STATUS_STYLES.get(status.value, ""))
    counts = {(c.workflow, c.status): c.count for c in snapshot.runs}
    for workflow in sorted({c.workflow for c in snapshot.runs}):
        shown.add_row(Text(workflow), *(str(counts.get((workflow, s), 0)) for s in present))
    return shown


async def status(runtime: Runtime, args: argparse.Namespace) -> int:
    """``squidmesh status``."""
    snapshot = await runtime.store_status(
        expiring_within=EXPIRING_WITHIN, workers_within=WORKERS_WITHIN
    )
    now = datetime.now(UTC)
    if args.json:
        print(json.dumps(status_json(snapshot, now), indent=2, sort_keys=True))
        return 0
    print_text(f"runs: {snapshot.total_runs}")
    if snapshot.runs:
        show(_runs_by_workflow(snapshot))
    oldest = snapshot.oldest_due_at
    late = "" if oldest is None else f"; the oldest due {_ago(oldest, now)}"
    print_text(f"jobs due now: {snapshot.due_jobs}{late}")
    print_text(
        f"leases: {snapshot.leased_jobs} held, {snapshot.leases_expiring} expiring within "
        f"{EXPIRING_WITHIN.total_seconds():.0f}s, {snapshot.leases_expired} expired"
    )
    if snapshot.schema_version is not None:
        print_text(
            f"schema: version {snapshot.schema_version} (expected {snapshot.schema_expected})"
        )
    if not snapshot.workers:
        print_text(f"workers seen in the last {WORKERS_WITHIN.total_seconds() / 60:.0f}m: none")
        return 0
    print_text(f"workers seen in the last {WORKERS_WITHIN.total_seconds() / 60:.0f}m:")
    rows = [("name", "last seen", "state", "concurrency", "executor")]
    rows.extend(
        (
            w.name,
            _ago(w.last_seen, now),
            "stopped" if w.stopped_at is not None else "running",
            str(w.details.get("concurrency", "-")),
            str(w.details.get("executor", "-")),
        )
        for w in snapshot.workers
    )
    show(table(rows))
    return 0


@dataclass(frozen=True, slots=True)
class Problem:
    check: str
    message: str
    details: dict[str, JsonValue] = field(default_factory=dict)


async def _stuck_runs(
    runtime: Runtime, limit: int, suspects: set[str], notes: list[str]
) -> list[Problem]:
    """Explain the newest ``limit`` unfinished runs of each status, and every suspect run."""
    seen: dict[str, str] = {}
    for wanted in UNFINISHED:
        listed = (await runtime.list_runs(status=wanted, limit=limit)).value_or(())
        seen.update((run.id, run.workflow) for run in listed)
        if len(listed) == limit:
            notes.append(
                f"only the newest {limit} {wanted.value} runs were explained (--stuck-limit)"
            )
    problems: list[Problem] = []
    for run_id in sorted(set(seen) | suspects):
        why = (await runtime.explain_run(run_id)).value_or(None)
        if why is not None and why.reason in STUCK:
            workflow = seen.get(run_id, "?")
            problems.append(
                Problem(
                    "stuck_run",
                    f"run {run_id} ({workflow}) is stuck: {why.summary}",
                    {"run_id": run_id, "workflow": workflow, "reason": why.reason.value},
                )
            )
    return problems


async def diagnose(
    runtime: Runtime, *, overdue: timedelta, stuck_limit: int, notes: list[str]
) -> list[Problem]:
    """Every problem ``doctor`` finds (see the module's rules); what it left out goes to notes."""
    snapshot = await runtime.store_status(
        expiring_within=EXPIRING_WITHIN, workers_within=WORKERS_WITHIN
    )
    now = datetime.now(UTC)
    problems: list[Problem] = []
    if snapshot.schema_version != snapshot.schema_expected:
        problems.append(
            Problem(
                "schema",
                f"the store's schema is at version {snapshot.schema_version}, this SquidMesh "
                f"expects {snapshot.schema_expected}; run `squidmesh migrate`",
                {"version": snapshot.schema_version, "expected": snapshot.schema_expected},
            )
        )
    for lease in snapshot.expired_leases:
        if now - lease.expired_at <= overdue:  # the next claim takes it: not yet a problem
            continue
        problems.append(
            Problem(
                "expired_lease",
                f"job {lease.job_id} ({lease.step}) lost its lease {_ago(lease.expired_at, now)}"
                f" (held by {lease.owner or 'unknown'}) and no worker reclaimed it",
                {"job_id": lease.job_id, "run_id": lease.run_id, "owner": lease.owner},
            )
        )
    oldest = snapshot.oldest_due_at
    if oldest is not None and now - oldest > overdue:
        problems.append(
            Problem(
                "overdue_jobs",
                f"{snapshot.due_jobs} job(s) due, the oldest since {_ago(oldest, now)}"
                f" (more than {overdue.total_seconds():g}s)",
                {"due_jobs": snapshot.due_jobs, "oldest_due_at": oldest.isoformat()},
            )
        )
    if snapshot.due_jobs and not [w for w in snapshot.workers if w.stopped_at is None]:
        problems.append(
            Problem(
                "no_workers",
                f"{snapshot.due_jobs} job(s) due and no running worker seen in the last "
                f"{WORKERS_WITHIN.total_seconds() / 60:.0f}m; start `squidmesh worker`",
                {"due_jobs": snapshot.due_jobs},
            )
        )
    suspects = {str(lease.run_id) for lease in snapshot.expired_leases}
    problems.extend(await _stuck_runs(runtime, stuck_limit, suspects, notes))
    return problems


async def doctor(runtime: Runtime, args: argparse.Namespace) -> int:
    """``squidmesh doctor``: 0 when healthy, 3 when a problem was found."""
    notes: list[str] = []
    try:
        problems = await diagnose(
            runtime, overdue=args.overdue, stuck_limit=args.stuck_limit, notes=notes
        )
    except MigrationRequiredError as exc:  # the store cannot even be read: rule 1 failed
        problems = [Problem("schema", f"{exc}; run `squidmesh migrate`")]
    if args.json:
        print(
            json.dumps(
                {
                    "ok": not problems,
                    "notes": notes,
                    "problems": [
                        {"check": p.check, "message": p.message, "details": p.details}
                        for p in problems
                    ],
                },
                indent=2,
                sort_keys=True,
                default=str,
            )
        )
    elif problems:
        print_text(f"{len(problems)} problem(s):")
        for problem in problems:
            print_text(f"  - [{problem.check}] {escaped(problem.message)}")
    else:
        print_text("no problems found (schema, leases, overdue jobs, workers, stuck runs)")
    if not args.json:
        for note in notes:
            print_text(f"note: {note}")
    return 3 if problems else 0


async def prune(runtime: Runtime, args: argparse.Namespace) -> int:
    """``squidmesh prune``: count what would go; delete it in batches with ``--yes``."""
    preview = await runtime.prune_runs(
        older_than=args.older_than, statuses=args.status, batch_size=args.batch_size, dry_run=True
    )
    if preview.value_or(None) is None:
        return emit(preview, args)
    report = preview.unwrap()
    names = ",".join(s.value for s in args.status)
    kept = f"; keeping {report.kept_cron} newest cron run(s)" if report.kept_cron else ""
    if not args.yes:
        if args.json:
            print(
                json.dumps(
                    {
                        "matched": report.matched,
                        "kept_cron": report.kept_cron,
                        "deleted": 0,
                        "dry_run": True,
                    },
                    sort_keys=True,
                )
            )
        else:
            print_text(
                f"{report.matched} run(s) {names} older than {_span(args.older_than)} "
                f"would be deleted{kept}; run again with --yes to delete them"
            )
        return 0
    out = console()
    with Progress(
        TextColumn("deleting runs"),
        BarColumn(),
        MofNCompleteColumn(),
        console=out,
        transient=True,
        disable=not out.is_terminal,
    ) as bar:
        task = bar.add_task("prune", total=report.matched)
        deleted = 0

        def advance(count: int) -> None:
            nonlocal deleted
            deleted += count
            bar.advance(task, count)
            if not out.is_terminal and not args.json:
                print_text(f"deleted {deleted}/{report.matched}", err=True)

        done = await runtime.prune_runs(
            older_than=args.older_than,
            statuses=args.status,
            batch_size=args.batch_size,
            on_batch=advance,
        )
    if done.value_or(None) is None:
        return refuse(done.failure(), args)
    final = done.unwrap()
    if args.json:
        print(
            json.dumps(
                {
                    "matched": final.matched,
                    "kept_cron": final.kept_cron,
                    "deleted": final.deleted,
                    "batches": final.batches,
                    "dry_run": False,
                },
                sort_keys=True,
            )
        )
    else:
        print_text(f"deleted {final.deleted} run(s) in {final.batches} batch(es){kept}")
    return 0
