"""The ``squidmesh`` command: one front door, every failure a sentence and an exit code.

::

    squidmesh smoke [--verbose] [--store memory|sqlite:PATH|postgresql://...[?schema=S]]
                    [--broker redis://...]
    squidmesh migrate --dsn DSN [--schema S] [--wait SECONDS]
    squidmesh worker --app MOD:ATTR [--concurrency N] [--log-level L] [--log-format text|json]
    squidmesh run start  --app MOD:ATTR WORKFLOW [PAYLOAD|-] [--trigger T]
                         [--idempotency-key K] [--wait [--timeout SECONDS]]
    squidmesh run show   --app MOD:ATTR RUN_ID [--full]
    squidmesh run list   --app MOD:ATTR [--workflow W] [--status S] [--limit N]
    squidmesh run cancel|replay --app MOD:ATTR RUN_ID [--actor A] [--note N] [--idempotency-key K]
    squidmesh run cancel|replay --app MOD:ATTR [--workflow W] [--status S]
                         [--created-after T] [--created-before T] [--yes]
    squidmesh run explain|unblock|approve|reject|signal --app MOD:ATTR RUN_ID ...
    squidmesh status --app MOD:ATTR
    squidmesh doctor --app MOD:ATTR [--overdue DURATION]
    squidmesh prune  --app MOD:ATTR --older-than DURATION [--status S,...] [--yes]
    squidmesh graph  --app MOD:ATTR WORKFLOW
    squidmesh schedule list --app MOD:ATTR [--count N]

Commands with ``--app`` accept ``--json`` (errors then print as JSON too),
except ``worker``, ``graph`` and ``schedule``. Exit codes:

* 0: success (with ``--wait``, a run that completed or parked waiting for a
  person or a signal);
* 1: refused (the error code and sentence are printed) or, with ``--wait``, a
  run that failed, was cancelled, or had not finished when the wait ended;
* 2: a usage, configuration or service error (a sentence naming the service);
* 3: ``doctor`` found a problem;
* 130: interrupted (Ctrl-C); 141: the reader of the output went away (``| head``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from squidmesh_backends.errors import ConfigurationError
from squidmesh_backends.logs import configure_logging
from squidmesh_backends.runtime.runtime import Runtime
from squidmesh_core.errors import SquidmeshError

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


def _run(args: argparse.Namespace) -> int:
    from squidmesh_backends.cli.runs import act

    return asyncio.run(_with_runtime(args, act))


async def _with_runtime(
    args: argparse.Namespace, command: Callable[[Runtime, argparse.Namespace], Awaitable[int]]
) -> int:
    """Load the application and run one client command on it; the store is closed after."""
    from squidmesh_backends.cli.app import load_runtime

    runtime = load_runtime(args.app)
    try:
        return await command(runtime, args)
    finally:
        await runtime.aclose()


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


def _status(args: argparse.Namespace) -> int:
    from squidmesh_backends.cli.ops import status

    return asyncio.run(_with_runtime(args, status))


def _doctor(args: argparse.Namespace) -> int:
    from squidmesh_backends.cli.ops import doctor

    return asyncio.run(_with_runtime(args, doctor))


def _prune(args: argparse.Namespace) -> int:
    from squidmesh_backends.cli.ops import prune

    return asyncio.run(_with_runtime(args, prune))


def build_parser() -> argparse.ArgumentParser:
    """The command line, wired to this module's handlers."""
    from squidmesh_backends.cli.parser import build_parser as build

    return build(
        {
            "smoke": _smoke,
            "worker": _worker,
            "migrate": _migrate,
            "run": _run,
            "status": _status,
            "doctor": _doctor,
            "prune": _prune,
            "schedule": _schedule,
            "graph": _graph,
            "docs-tables": _docs_tables,
        },
        _version(),
    )


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script: no traceback for a usage, service or pipe fault."""
    args = argparse.Namespace()
    try:
        args = build_parser().parse_args(argv)
        configure_logging(
            getattr(args, "log_level", "warning"), getattr(args, "log_format", "text")
        )
        code: int = args.handler(args)
        sys.stdout.flush()
    except SquidmeshError as exc:  # configuration, store, broker: a sentence, exit 2
        from squidmesh_backends.cli.render import escaped

        print(f"error: {escaped(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        waiting = getattr(args, "waiting_for", None)
        what = f"stopped waiting; run {waiting} goes on" if waiting else "interrupted"
        print(f"\n{what}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _quiet_stdout()
        return 141
    return code


if __name__ == "__main__":
    raise SystemExit(main())
