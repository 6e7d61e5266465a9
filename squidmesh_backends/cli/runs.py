"""The ``run`` commands: start, show, list, cancel, replay, and the operator's commands.

Every one acts as a client: it reads and changes runs through the store and
never claims or runs a step, whatever executor the application composes. A run
started here is run by the application's ``squidmesh worker`` processes; with
``--wait`` this command only watches the store until the run finishes or parks.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from datetime import UTC, datetime, timedelta

from returns.result import Failure, Result

from squidmesh_backends.cli.console import print_text, show
from squidmesh_backends.cli.render import escaped
from squidmesh_backends.errors import ConfigurationError
from squidmesh_backends.runtime.runtime import Runtime
from squidmesh_core.errors import UnknownWorkflow
from squidmesh_core.jsonvalue import JsonValue
from squidmesh_core.state import RunStatus
from squidmesh_core.views import Run

WAIT_POLL = timedelta(milliseconds=100)
"""How often ``run start --wait`` reads the run while it waits."""


def sentence(error: object) -> str:
    """A refusal as a sentence (its ``describe()``), never a repr."""
    describe = getattr(error, "describe", None)
    return str(describe()) if callable(describe) else str(error)


def error_json(error: object) -> dict[str, object]:
    """``code``, ``message`` and the refusal's own fields, for scripts."""
    details = dataclasses.asdict(error) if dataclasses.is_dataclass(error) else {}  # type: ignore[arg-type]
    return {
        "code": getattr(error, "code", "error"),
        "message": sentence(error),
        "details": details,
    }


def refuse(error: object, args: argparse.Namespace) -> int:
    """Print a refusal (one line on stderr, or JSON on stdout with ``--json``); exit code 1."""
    if getattr(args, "json", False):
        print(json.dumps({"error": error_json(error)}, default=str, sort_keys=True))
    else:
        print_text(
            f"error: {getattr(error, 'code', 'error')}: {escaped(sentence(error))}", err=True
        )
    return 1


def emit(result: Result[object, object], args: argparse.Namespace) -> int:
    """Print a command's result as text or JSON; 0 for a value, 1 for a refusal."""
    from squidmesh_backends.cli.render import (
        data_section,
        explanation_json,
        explanation_text,
        run_json,
        runs_table,
        summary,
        timeline,
    )
    from squidmesh_core.explain import Explanation

    if isinstance(result, Failure):
        return refuse(result.failure(), args)
    value = result.unwrap()
    if isinstance(value, Explanation):
        if args.json:
            print(json.dumps(explanation_json(value, args.app), indent=2, sort_keys=True))
        else:
            print_text(explanation_text(value, args.app))
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
        runs = [r for r in value if isinstance(r, Run)]
        show(runs_table(runs)) if runs else print_text("no runs")
    else:
        assert isinstance(value, Run)
        print_text(summary(value, now=datetime.now(UTC)))
        if value.history is not None:
            print_text(data_section(value, full=getattr(args, "full", False)))
            show(timeline(value))
    return 0


def read_payload(raw: str | None) -> object:
    """The payload argument as JSON: ``-`` or nothing reads stdin (``{}`` when empty)."""
    if raw is None or raw == "-":
        text = sys.stdin.read() if raw == "-" or not sys.stdin.isatty() else ""
        raw = text.strip() or "{}"
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"the payload is not valid JSON: {exc}") from exc


async def _check_someone_can_run_it(runtime: Runtime) -> None:
    """Refuse to wait for what no worker can run: a private store, or a broker that is down."""
    from squidmesh_backends.memory import MemoryRunStore
    from squidmesh_backends.taskiq import TaskiqExecutor, reach_broker

    if isinstance(runtime.store, MemoryRunStore):
        raise ConfigurationError(
            "--wait needs a store a worker process can share (SQLite or PostgreSQL); "
            "this application's memory store lives only in this command"
        )
    executor = runtime.worker.executor
    if isinstance(executor, TaskiqExecutor):
        await reach_broker(executor.broker)


async def start(runtime: Runtime, args: argparse.Namespace) -> int:
    """``run start``; with ``--wait``, watch the run until it finishes or parks."""
    payload = read_payload(args.payload)
    if args.wait:
        await _check_someone_can_run_it(runtime)
    started = await runtime.start_run(
        args.workflow, payload, trigger=args.trigger, idempotency_key=args.idempotency_key
    )
    if not args.wait or isinstance(started, Failure):
        return emit(started, args)
    run_id = started.unwrap().id
    args.waiting_for = run_id  # named by main() if Ctrl-C stops the wait
    print_text(
        f"run {run_id} started; waiting up to {args.timeout:g}s for a worker to finish it "
        "(Ctrl-C stops waiting, the run goes on)",
        err=True,
    )
    finished = await runtime.wait_for(
        run_id, timeout=timedelta(seconds=args.timeout), poll=WAIT_POLL, or_paused=True
    )
    shown = emit(finished, args)
    run = finished.value_or(None)
    if shown != 0 or run is None or run.status is RunStatus.COMPLETED:
        return shown
    if run.status is RunStatus.PAUSED:
        print_text(
            f"run {run.id} waits at {run.parked_step}; see `squidmesh run explain "
            f"--app {args.app} {run.id}`",
            err=True,
        )
        return 0
    if not run.status.terminal:
        print_text(
            f"error: run {run.id} is still {run.status.value} after {args.timeout:g}s; it goes on"
            " (is a `squidmesh worker` running for this application?)",
            err=True,
        )
        return 1
    print_text(f"error: run {run.id} ended {run.status.value}, not completed", err=True)
    return 1


async def cancel_or_replay(
    runtime: Runtime, args: argparse.Namespace, run_id: str, key: str | None
) -> Result[Run, object]:
    """``run cancel`` or ``run replay`` of one run, with the command's who and why."""
    who = {"actor": args.actor, "note": args.note, "idempotency_key": key}
    if args.action == "cancel":
        return await runtime.cancel_run(run_id, **who)
    return await runtime.replay_run(
        run_id, **who, allow_irreversible=args.allow_irreversible, from_step=args.from_step
    )


async def act(runtime: Runtime, args: argparse.Namespace) -> int:
    """Run one ``run`` command as a client and print its result."""
    match args.action:
        case "start":
            return await start(runtime, args)
        case "show":
            return emit(await runtime.inspect_run(args.run_id, include_history=True), args)
        case "list":
            listed = await runtime.list_runs(
                workflow=args.workflow, status=args.status, limit=args.limit
            )
            unknown = args.workflow is not None and args.workflow not in runtime.client.workflows
            if unknown and not listed.value_or(()):  # a typo, not an empty list
                return emit(Failure(UnknownWorkflow(workflow=args.workflow)), args)
            return emit(listed, args)
        case "cancel" | "replay" if args.run_id is None:
            from squidmesh_backends.cli.bulk import bulk

            return await bulk(runtime, args)
        case "cancel" | "replay":
            return emit(
                await cancel_or_replay(runtime, args, args.run_id, args.idempotency_key), args
            )
    from squidmesh_backends.cli.operator import operate

    return emit(await operate(runtime, args, read_payload), args)
