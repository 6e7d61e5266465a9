"""``run cancel`` and ``run replay`` by filter: a preview first, then one audited command per run.

Rules:

1. At least one filter (``--workflow``, ``--status``, ``--created-after``,
   ``--created-before``) is needed: nothing acts on every run by accident.
2. The runs are selected once, before anything changes (so the runs a replay
   creates are never selected again), newest first, at most :data:`MOST`;
   reaching that many is said (narrow the filters, or repeat the action).
3. Without ``--yes`` nothing changes: the command prints how many runs match
   and the first of them.
4. With ``--yes`` each run gets its own command through the same audited call
   as a single run (``--actor``, ``--note``; an ``--idempotency-key`` becomes
   ``KEY:RUN_ID`` per run, so repeating the bulk action repeats nothing). A
   run that refuses (it finished meanwhile, say) is reported and the others go
   on; the exit code is then 1.
"""

from __future__ import annotations

import argparse
import json

from returns.result import Failure

from squidmesh_backends.cli.console import print_text, show
from squidmesh_backends.cli.render import escaped, runs_table
from squidmesh_backends.cli.runs import cancel_or_replay, refuse, sentence
from squidmesh_backends.errors import ConfigurationError
from squidmesh_backends.runtime.runtime import Runtime
from squidmesh_core.views import Run

MOST = 10_000
"""Most runs one bulk action selects (narrow the filters, or repeat, for more)."""
PAGE = 500
PREVIEW = 20


async def select(runtime: Runtime, args: argparse.Namespace) -> list[Run] | object:
    """Every run the filters select (rule 2), or the listing's refusal."""
    chosen: list[Run] = []
    cursor: Run | None = None
    while len(chosen) < MOST:
        page = await runtime.list_runs(
            workflow=args.workflow,
            status=args.status,
            limit=min(PAGE, MOST - len(chosen)),
            created_after=args.created_after,
            created_before=args.created_before,
            after=None if cursor is None else cursor.id,
        )
        if isinstance(page, Failure):
            refusal: object = page.failure()
            return refusal
        runs = page.unwrap()
        chosen.extend(runs)
        if len(runs) < PAGE:
            break
        cursor = runs[-1]
    return chosen


def _preview(selected: list[Run], verb: str, args: argparse.Namespace) -> int:
    """Rule 3: say what would change, change nothing."""
    if args.json:
        print(
            json.dumps(
                {"matched": len(selected), "runs": [r.id for r in selected], "dry_run": True},
                sort_keys=True,
            )
        )
        return 0
    print_text(f"{len(selected)} run(s) would be {verb}:")
    if selected:
        show(runs_table(selected[:PREVIEW]))
    if len(selected) > PREVIEW:
        print_text(f"  ... and {len(selected) - PREVIEW} more")
    print_text("run again with --yes to do it")
    return 0


async def bulk(runtime: Runtime, args: argparse.Namespace) -> int:
    """Preview or act on the runs the filters select (the module's rules)."""
    filters = (args.workflow, args.status, args.created_after, args.created_before)
    if all(f is None for f in filters):
        raise ConfigurationError(
            f"run {args.action} needs a run id or at least one filter "
            "(--workflow, --status, --created-after, --created-before)"
        )
    selected = await select(runtime, args)
    if not isinstance(selected, list):
        return refuse(selected, args)
    verb = {"cancel": "cancelled", "replay": "replayed"}[args.action]
    if len(selected) >= MOST:
        print_text(
            f"note: only the newest {MOST} matching runs are selected; "
            "narrow the filters or repeat the action for the rest",
            err=True,
        )
    if not args.yes:
        return _preview(selected, verb, args)
    done: list[dict[str, object]] = []
    refused = 0
    for run in selected:
        key = None if args.idempotency_key is None else f"{args.idempotency_key}:{run.id}"
        outcome = await cancel_or_replay(runtime, args, run.id, key)
        if isinstance(outcome, Failure):
            refused += 1
            error = outcome.failure()
            code = getattr(error, "code", "error")
            done.append({"run_id": run.id, "ok": False, "code": code, "message": sentence(error)})
            if not args.json:
                print_text(f"refused {run.id}: {code}: {escaped(sentence(error))}", err=True)
            continue
        made = outcome.unwrap()
        done.append(
            {
                "run_id": run.id,
                "ok": True,
                "status": made.status.value,
                "new_run": (made.id if args.action == "replay" else None),
            }
        )
        if not args.json:
            extra = f" as {made.id}" if args.action == "replay" else f" ({made.status.value})"
            print_text(f"{verb} {run.id}{extra}")
    if args.json:
        print(
            json.dumps(
                {"matched": len(selected), "refused": refused, "results": done, "dry_run": False},
                sort_keys=True,
                default=str,
            )
        )
    else:
        print_text(f"{len(selected) - refused} of {len(selected)} run(s) {verb}")
    return 1 if refused else 0
