"""The ``squidmesh`` command.

::

    squidmesh smoke [--verbose] [--store memory|sqlite:PATH|postgresql://...[?schema=S]]
                    [--broker redis://...]
    squidmesh migrate --dsn DSN [--schema S] [--wait SECONDS]
    squidmesh worker --app MOD:ATTR [--concurrency N]
    squidmesh run start  --app MOD:ATTR WORKFLOW [PAYLOAD|-] [--trigger T]
                         [--idempotency-key K] [--wait]
    squidmesh run show   --app MOD:ATTR RUN_ID
    squidmesh run list   --app MOD:ATTR [--workflow W] [--status S] [--limit N]
    squidmesh run cancel --app MOD:ATTR RUN_ID [--actor A] [--note N] [--idempotency-key K]
    squidmesh run replay --app MOD:ATTR RUN_ID [--actor A] [--note N] [--idempotency-key K]
    squidmesh run explain --app MOD:ATTR RUN_ID
    squidmesh run unblock|approve|reject --app MOD:ATTR RUN_ID --actor A [--note N]
                         [--idempotency-key K]
    squidmesh run signal --app MOD:ATTR RUN_ID NAME [--payload JSON] [--actor A]
                         [--idempotency-key K]
    squidmesh graph      --app MOD:ATTR WORKFLOW
    squidmesh schedule list --app MOD:ATTR [--count N]

Every ``run`` command accepts ``--json`` (errors then print as JSON too). Exit
codes: 0 success (with ``--wait``, a run that completed or is parked waiting for a
person or a signal), 1 refused (the error code and message are printed) or, with
``--wait``, a run that failed, was cancelled or timed out, 2 a usage,
configuration or store error.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.metadata
import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from returns.result import Failure, Result

from squidmesh_backends.errors import BackendError, ConfigurationError
from squidmesh_backends.runtime.runtime import Runtime
from squidmesh_core.errors import UnknownWorkflow
from squidmesh_core.jsonvalue import JsonValue
from squidmesh_core.state import RunStatus
from squidmesh_core.views import Run

START_MARK = "<!-- status-tables:start -->"
END_MARK = "<!-- status-tables:end -->"


def render_tables_into(text: str) -> str:
    """Replace the status-table section of a Markdown document with the code's tables."""
    from squidmesh_core._table import markdown_tables

    head, _, rest = text.partition(START_MARK)
    _, _, tail = rest.partition(END_MARK)
    return f"{head}{START_MARK}\n{markdown_tables()}\n{END_MARK}{tail}"


def _docs_tables(args: argparse.Namespace) -> int:
    path = Path(args.write)
    path.write_text(render_tables_into(path.read_text()))
    print(f"status tables written to {path}")
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from squidmesh_backends.postgres import LATEST_VERSION, migrate

    if not args.dsn:
        raise ConfigurationError("give the database with --dsn or SQUIDMESH_DSN")
    applied = asyncio.run(migrate(args.dsn, schema=args.schema, retry_for=args.wait))
    if applied:
        done = ", ".join(str(v) for v in applied)
        print(f"schema {args.schema}: applied migration(s) {done}; now at version {LATEST_VERSION}")
    else:
        print(f"schema {args.schema}: already at version {LATEST_VERSION}; nothing to do")
    return 0


def _worker(args: argparse.Namespace) -> int:
    from squidmesh_backends.cli.worker import run_worker

    return asyncio.run(run_worker(args.app, concurrency=args.concurrency))


def _smoke(args: argparse.Namespace) -> int:
    from squidmesh_backends.cli.smoke import run_smoke

    return asyncio.run(run_smoke(verbose=args.verbose, store=args.store, broker=args.broker))


def _version() -> str:
    try:
        return importlib.metadata.version("squidmesh")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return "unknown (not installed)"


def _sentence(error: object) -> str:
    describe = getattr(error, "describe", None)
    return str(describe()) if callable(describe) else str(error)


def _describe_error(error: object) -> str:
    return f"{getattr(error, 'code', 'error')}: {_sentence(error)}"


def _error_json(error: object) -> dict[str, object]:
    """``code``, ``message`` and the refusal's own fields, for scripts."""
    details = dataclasses.asdict(error) if dataclasses.is_dataclass(error) else {}  # type: ignore[arg-type]
    return {
        "code": getattr(error, "code", "error"),
        "message": _sentence(error),
        "details": details,
    }


def _emit(result: Result[object, object], args: argparse.Namespace) -> int:
    from squidmesh_backends.cli.render import (
        explanation_json,
        explanation_text,
        run_json,
        runs_table,
        summary,
        timeline,
    )
    from squidmesh_core.explain import Explanation

    if isinstance(result, Failure):
        error = result.failure()
        if args.json:
            print(json.dumps({"error": _error_json(error)}, default=str, sort_keys=True))
        else:
            print(f"error: {_describe_error(error)}", file=sys.stderr)
        return 1
    value = result.unwrap()
    if isinstance(value, Explanation):
        if args.json:
            print(json.dumps(explanation_json(value, args.app), indent=2, sort_keys=True))
        else:
            print(explanation_text(value, args.app))
        return 0
    if args.json:
        data: JsonValue
        if isinstance(value, tuple):
            data = [run_json(r) for r in value if isinstance(r, Run)]
        else:
            assert isinstance(value, Run)
            data = run_json(value)
        print(json.dumps(data, indent=2, sort_keys=True))
    elif isinstance(value, tuple):
        print(runs_table([r for r in value if isinstance(r, Run)]) if value else "no runs")
    else:
        assert isinstance(value, Run)
        print(summary(value, now=datetime.now(UTC)))
        if value.history is not None:
            print(timeline(value))
    return 0


def _read_payload(raw: str | None) -> object:
    if raw is None or raw == "-":
        text = sys.stdin.read() if raw == "-" or not sys.stdin.isatty() else ""
        raw = text.strip() or "{}"
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"the payload is not valid JSON: {exc}") from exc


async def _run_command(args: argparse.Namespace) -> int:
    from squidmesh_backends.cli.app import load_runtime

    runtime = load_runtime(args.app)
    try:
        return await _run_action(runtime, args)
    finally:
        await runtime.aclose()


async def _start(runtime: Runtime, args: argparse.Namespace) -> int:
    payload = _read_payload(args.payload)
    if not args.wait:
        return _emit(
            await runtime.start_run(
                args.workflow,
                payload,
                trigger=args.trigger,
                idempotency_key=args.idempotency_key,
            ),
            args,
        )
    async with runtime:
        started = await runtime.start_run(
            args.workflow,
            payload,
            trigger=args.trigger,
            idempotency_key=args.idempotency_key,
        )
        if isinstance(started, Failure):
            return _emit(started, args)
        finished = await runtime.wait_for(
            started.unwrap().id, timeout=timedelta(seconds=args.timeout), or_paused=True
        )
    shown = _emit(finished, args)
    run = finished.value_or(None)
    if shown == 0 and run is not None and run.status is RunStatus.PAUSED:
        print(
            f"run {run.id} waits at {run.parked_step}; see `squidmesh run explain "
            f"--app {args.app} {run.id}`",
            file=sys.stderr,
        )
        return 0
    if shown == 0 and run is not None and run.status is not RunStatus.COMPLETED:
        print(f"error: run {run.id} ended {run.status.value}, not completed", file=sys.stderr)
        return 1
    return shown


async def _run_action(runtime: Runtime, args: argparse.Namespace) -> int:
    match args.action:
        case "start":
            return await _start(runtime, args)
        case "show":
            return _emit(await runtime.inspect_run(args.run_id, include_history=True), args)
        case "list":
            listed = await runtime.list_runs(
                workflow=args.workflow, status=args.status, limit=args.limit
            )
            unknown = args.workflow is not None and args.workflow not in runtime.client.workflows
            if unknown and not listed.value_or(()):  # a typo, not an empty list
                return _emit(Failure(UnknownWorkflow(workflow=args.workflow)), args)
            return _emit(listed, args)
        case "cancel":
            return _emit(
                await runtime.cancel_run(
                    args.run_id,
                    actor=args.actor,
                    note=args.note,
                    idempotency_key=args.idempotency_key,
                ),
                args,
            )
        case "replay":
            return _emit(
                await runtime.replay_run(
                    args.run_id,
                    actor=args.actor,
                    note=args.note,
                    idempotency_key=args.idempotency_key,
                    allow_irreversible=args.allow_irreversible,
                    from_step=args.from_step,
                ),
                args,
            )
    from squidmesh_backends.cli.operator import operate

    return _emit(await operate(runtime, args, _read_payload), args)


def _run(args: argparse.Namespace) -> int:
    return asyncio.run(_run_command(args))


def _schedule(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from squidmesh_backends.cli.app import load_runtime
    from squidmesh_core.cron import parse_cron
    from squidmesh_core.definition import TriggerKind

    runtime = load_runtime(args.app)
    active = {
        (a.definition.name, a.trigger)
        for a in (runtime.worker.cron_loop.schedules if runtime.worker.cron_loop else ())
    }
    now = datetime.now(UTC)
    found = False
    for name, definition in sorted(runtime.workflows.items()):
        for trigger in definition.triggers:
            if trigger.kind is not TriggerKind.CRON:
                continue
            found = True
            schedule = parse_cron(trigger.expression, trigger.timezone).unwrap()
            state = "active" if (name, trigger.name) in active else "not activated (cron=[...])"
            print(f"{name} / {trigger.name}: {schedule.expression} in {schedule.timezone}, {state}")
            for tick in schedule.upcoming(now, args.count):
                print(f"  {tick.astimezone(schedule.zone).isoformat()}  ({tick.isoformat()})")
    if not found:
        print("no cron triggers")
    return 0


def _graph(args: argparse.Namespace) -> int:
    from squidmesh_backends.cli.app import load_runtime
    from squidmesh_core.graph import to_mermaid

    runtime = load_runtime(args.app)
    definition = runtime.workflows.get(args.workflow)
    if definition is None:
        known = ", ".join(sorted(runtime.workflows)) or "none"
        print(f"error: unknown_workflow: {args.workflow!r} (registered: {known})", file=sys.stderr)
        return 1
    print(to_mermaid(definition))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="squidmesh", description="Durable workflows in code.")
    parser.add_argument("--version", action="version", version=f"squidmesh {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    smoke = commands.add_parser(
        "smoke", help="run the example payment recovery end to end and check it"
    )
    smoke.add_argument("--verbose", action="store_true", help="print every event as it happens")
    smoke.add_argument(
        "--store",
        help="'memory', 'sqlite:PATH' or 'postgresql://...[?schema=NAME]' (migrated first); "
        "default: a fresh SQLite file in a temporary folder",
    )
    smoke.add_argument(
        "--broker",
        metavar="redis://...",
        help="run the steps in a separate `squidmesh worker` process through Taskiq on Redis",
    )
    smoke.set_defaults(handler=_smoke)

    worker = commands.add_parser(
        "worker", help="claim, publish and run steps until SIGTERM (scale out with more workers)"
    )
    worker.add_argument("--app", required=True, metavar="MOD:ATTR", help="the host's Runtime")
    worker.add_argument(
        "--concurrency", type=int, help="steps this process runs at once (default: settings)"
    )
    worker.set_defaults(handler=_worker)

    migrate = commands.add_parser(
        "migrate", help="create or upgrade SquidMesh's tables in a PostgreSQL database"
    )
    migrate.add_argument(
        "--dsn",
        default=os.environ.get("SQUIDMESH_DSN"),
        help="libpq connection string or postgresql:// URL (default: $SQUIDMESH_DSN)",
    )
    migrate.add_argument(
        "--schema", default="public", help="PostgreSQL schema for the tables (default: public)"
    )
    migrate.add_argument(
        "--wait",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="keep retrying an unreachable server this long (default: 10)",
    )
    migrate.set_defaults(handler=_migrate)

    from squidmesh_backends.cli.operator import add_operator_commands, add_who

    run = commands.add_parser(
        "run", help="start, show, explain, list and command runs (cancel, approve, signal, ...)"
    )
    actions = run.add_subparsers(dest="action", required=True)

    def with_app(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--app", required=True, metavar="MOD:ATTR", help="the host's Runtime")
        p.add_argument("--json", action="store_true", help="print JSON for scripts")
        p.set_defaults(handler=_run)
        return p

    start = with_app(actions.add_parser("start", help="start a run"))
    start.add_argument("workflow")
    start.add_argument("payload", nargs="?", help="JSON object; '-' or nothing reads stdin")
    start.add_argument("--trigger")
    start.add_argument("--idempotency-key")
    start.add_argument(
        "--wait",
        action="store_true",
        help="run it in this process until it finishes or waits for a person or signal",
    )
    start.add_argument("--timeout", type=float, default=300.0, help="seconds to wait (with --wait)")
    show = with_app(actions.add_parser("show", help="show a run with its steps and attempts"))
    show.add_argument("run_id")
    listing = with_app(actions.add_parser("list", help="list runs, newest first"))
    listing.add_argument("--workflow")
    listing.add_argument("--status")
    listing.add_argument("--limit", type=int, default=50)
    cancel = with_app(actions.add_parser("cancel", help="cancel a run"))
    cancel.add_argument("run_id")
    add_who(cancel, actor_required=False)
    replay = with_app(actions.add_parser("replay", help="start a new run from a run's payload"))
    replay.add_argument("run_id")
    add_who(replay, actor_required=False)
    replay.add_argument(
        "--allow-irreversible",
        action="store_true",
        help="replay even if it runs again steps marked irreversible or not compensatable",
    )
    replay.add_argument(
        "--from-step", help="reuse the outputs of the steps before this one and start here"
    )
    add_operator_commands(actions, with_app)

    schedule = commands.add_parser("schedule", help="cron triggers and their next fire times")
    schedule_actions = schedule.add_subparsers(dest="action", required=True)
    schedule_list = schedule_actions.add_parser("list", help="list cron triggers")
    schedule_list.add_argument("--app", required=True, metavar="MOD:ATTR")
    schedule_list.add_argument("--count", type=int, default=5, help="fire times to show")
    schedule_list.set_defaults(handler=_schedule)

    graph = commands.add_parser("graph", help="print a workflow as a Mermaid diagram")
    graph.add_argument("--app", required=True, metavar="MOD:ATTR")
    graph.add_argument("workflow")
    graph.set_defaults(handler=_graph)

    tables = commands.add_parser("docs-tables", help="write the status tables into a doc")
    tables.add_argument("--write", required=True, metavar="FILE", help="Markdown file to update")
    tables.set_defaults(handler=_docs_tables)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        code: int = args.handler(args)
    except (ConfigurationError, BackendError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    raise SystemExit(main())
