"""The ``squidmesh`` command's arguments: every command, every option with its help.

Developer-only commands (``docs-tables``) are accepted but left out of the help.
Options with a fixed set of values list them (``--status``, ``--log-level``,
``--log-format``). Durations are written ``30d``, ``12h``, ``15m``, ``90s`` or
``2w``; times are ISO 8601 (``2026-12-01T00:00:00Z``) or a duration meaning
that long ago.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from squidmesh_backends.logs import FORMATS, LEVELS
from squidmesh_core.state import RunStatus

STATUSES = tuple(s.value for s in RunStatus)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")

LONGEST = timedelta(days=36_525)
"""The longest duration accepted (a century): ages and cutoffs beyond it are typos."""

Handler = Callable[[argparse.Namespace], int]


def duration(text: str) -> timedelta:
    """``30d`` -> 30 days (an argparse type)."""
    found = _DURATION.fullmatch(text.strip())
    if found is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: write a number and a unit, as in 30d, 12h, 15m, 90s, 2w"
        )
    value = float(found[1]) * _UNITS[found[2]]
    if value > LONGEST.total_seconds():
        raise argparse.ArgumentTypeError(f"{text!r} is longer than {LONGEST.days} days")
    return timedelta(seconds=value)


def seconds(text: str) -> float:
    """A finite, positive number of seconds (an argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0 or value > 365 * 86400:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return value


def moment(text: str) -> datetime:
    """An ISO 8601 time, or a duration meaning that long ago (an argparse type)."""
    if _DURATION.fullmatch(text.strip()):
        return datetime.now(UTC) - duration(text)
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: write 2026-12-01T09:00:00Z or a duration ago, as in 2h"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def statuses(text: str) -> tuple[RunStatus, ...]:
    """``completed,failed`` -> run statuses (an argparse type)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in STATUSES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown status {', '.join(unknown) or text!r}; choose from {', '.join(STATUSES)}"
        )
    return tuple(RunStatus(n) for n in names)


def positive(text: str) -> int:
    """A whole number of at least 1 (an argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def add_app(parser: argparse.ArgumentParser, *, json_output: bool = True) -> None:
    """``--app`` (and ``--json``)."""
    parser.add_argument(
        "--app",
        required=True,
        metavar="MOD:ATTR",
        help="the application's Runtime, or a function returning one (myapp.workflows:runtime)",
    )
    if json_output:
        parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def add_filters(parser: argparse.ArgumentParser, *, status_help: str) -> None:
    """``--workflow``, ``--status``, ``--created-after``, ``--created-before``."""
    parser.add_argument("--workflow", help="only runs of this workflow")
    parser.add_argument("--status", choices=STATUSES, metavar="STATUS", help=status_help)
    parser.add_argument(
        "--created-after", type=moment, metavar="TIME", help="only runs created after TIME"
    )
    parser.add_argument(
        "--created-before", type=moment, metavar="TIME", help="only runs created before TIME"
    )


def _from_environ(name: str, default: str, choices: tuple[str, ...]) -> str:
    """An environment variable's value (any case) if it is one of ``choices``; else ``default``."""
    value = os.environ.get(name, default).strip().lower()
    return value if value in choices else default


def add_logging(parser: argparse.ArgumentParser) -> None:
    """``--log-level`` and ``--log-format``."""
    parser.add_argument(
        "--log-level",
        choices=LEVELS,
        default=_from_environ("SQUIDMESH_LOG_LEVEL", "info", LEVELS),
        help="least severe records shown; info shows each step starting and finishing "
        "(default: $SQUIDMESH_LOG_LEVEL or info)",
    )
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default=_from_environ("SQUIDMESH_LOG_FORMAT", "text", FORMATS),
        help="text lines, or one JSON object per line for log shippers "
        "(default: $SQUIDMESH_LOG_FORMAT or text)",
    )


def build_parser(handlers: dict[str, Handler], version: str) -> argparse.ArgumentParser:
    """The whole command line; ``handlers`` maps each command to its function."""
    parser = argparse.ArgumentParser(prog="squidmesh", description="Durable workflows in code.")
    parser.add_argument("--version", action="version", version=f"squidmesh {version}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    smoke = commands.add_parser(
        "smoke", help="run the example workflows end to end and check every result"
    )
    smoke.add_argument("--verbose", action="store_true", help="print every event as it happens")
    smoke.add_argument(
        "--store",
        metavar="STORE",
        help="'memory', 'sqlite:PATH' (its folder must exist) or "
        "'postgresql://...[?schema=NAME]' (migrated first); "
        "default: a fresh SQLite file in a temporary folder",
    )
    smoke.add_argument(
        "--broker",
        metavar="redis://...",
        help="run the steps in a separate `squidmesh worker` process through Taskiq on Redis",
    )
    smoke.set_defaults(handler=handlers["smoke"])

    worker = commands.add_parser(
        "worker", help="claim, publish and run steps until SIGTERM (scale out with more workers)"
    )
    add_app(worker, json_output=False)
    worker.add_argument(
        "--concurrency",
        type=positive,
        help="steps this process runs at once (default: the application's settings)",
    )
    add_logging(worker)
    worker.set_defaults(handler=handlers["worker"])

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
        type=seconds,
        default=10.0,
        metavar="SECONDS",
        help="keep retrying an unreachable server this long (default: 10)",
    )
    migrate.set_defaults(handler=handlers["migrate"])

    from squidmesh_backends.cli.operator import add_operator_commands, add_who

    run = commands.add_parser(
        "run", help="start, show, explain, list and command runs (cancel, approve, signal, ...)"
    )
    actions = run.add_subparsers(dest="action", required=True, metavar="ACTION")

    def with_app(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        add_app(p)
        p.set_defaults(handler=handlers["run"])
        return p

    start = with_app(actions.add_parser("start", help="start a run"))
    start.add_argument("workflow", help="the workflow's name")
    start.add_argument("payload", nargs="?", help="JSON object; '-' or nothing reads stdin")
    start.add_argument("--trigger", help="the trigger to start it by (default: the first)")
    start.add_argument(
        "--idempotency-key", help="starting again with the same key returns the first run"
    )
    start.add_argument(
        "--wait",
        action="store_true",
        help="watch the run until it finishes or waits for a person or a signal "
        "(a worker runs it; this command never does)",
    )
    start.add_argument(
        "--timeout",
        type=seconds,
        default=300.0,
        metavar="SECONDS",
        help="longest --wait (default: 300)",
    )
    show = with_app(actions.add_parser("show", help="show a run: data, steps, attempts, audit"))
    show.add_argument("run_id", help="the run's id")
    show.add_argument(
        "--full", action="store_true", help="print payload, context and outputs uncut"
    )
    listing = with_app(actions.add_parser("list", help="list runs, newest first"))
    listing.add_argument("--workflow", help="only runs of this workflow")
    listing.add_argument(
        "--status", choices=STATUSES, metavar="STATUS", help=f"one of {', '.join(STATUSES)}"
    )
    listing.add_argument("--limit", type=positive, default=50, help="most runs (default: 50)")
    for verb, text in (
        ("cancel", "cancel a run, or every run a filter selects"),
        ("replay", "start a new run from a run's payload, or from every run a filter selects"),
    ):
        bulk = with_app(actions.add_parser(verb, help=text))
        bulk.add_argument(
            "run_id", nargs="?", help="the run's id (or leave it out and give filters)"
        )
        add_who(bulk, actor_required=False)
        add_filters(bulk, status_help=f"only runs in this status ({', '.join(STATUSES)})")
        bulk.add_argument(
            "--yes", action="store_true", help="act on what the filters select (else: preview)"
        )
        if verb == "replay":
            bulk.add_argument(
                "--allow-irreversible",
                action="store_true",
                help="replay even if it runs again steps marked irreversible or not compensatable",
            )
            bulk.add_argument(
                "--from-step", help="reuse the outputs of the steps before this one and start here"
            )
    add_operator_commands(actions, with_app)

    status = commands.add_parser(
        "status", help="runs by status, due jobs, lateness, leases and workers, at a glance"
    )
    add_app(status)
    status.set_defaults(handler=handlers["status"])

    doctor = commands.add_parser(
        "doctor", help="look for problems; exits 3 when it finds one (a deploy gate)"
    )
    add_app(doctor)
    doctor.add_argument(
        "--overdue",
        type=duration,
        default=timedelta(minutes=1),
        metavar="DURATION",
        help="a job due longer ago than this is a problem (default: 1m)",
    )
    doctor.add_argument(
        "--stuck-limit",
        type=positive,
        default=200,
        help="most running runs to explain when looking for stuck ones (default: 200)",
    )
    doctor.set_defaults(handler=handlers["doctor"])

    prune = commands.add_parser(
        "prune", help="delete finished runs older than a cutoff (a preview unless --yes)"
    )
    add_app(prune)
    prune.add_argument(
        "--older-than",
        type=duration,
        required=True,
        metavar="DURATION",
        help="runs whose last change is older than this (30d, 12h, ...)",
    )
    prune.add_argument(
        "--status",
        type=statuses,
        default=(RunStatus.COMPLETED, RunStatus.CANCELLED, RunStatus.FAILED),
        metavar="S[,S...]",
        help="finished statuses to delete (default: completed,cancelled,failed)",
    )
    prune.add_argument(
        "--batch-size",
        type=positive,
        default=500,
        help="runs deleted per transaction (default: 500)",
    )
    prune.add_argument("--yes", action="store_true", help="delete (else: only show the count)")
    prune.set_defaults(handler=handlers["prune"])

    schedule = commands.add_parser("schedule", help="cron triggers and their next fire times")
    schedule_actions = schedule.add_subparsers(dest="action", required=True, metavar="ACTION")
    schedule_list = schedule_actions.add_parser("list", help="list cron triggers")
    add_app(schedule_list, json_output=False)
    schedule_list.add_argument(
        "--count", type=positive, default=5, help="fire times to show (default: 5)"
    )
    schedule_list.set_defaults(handler=handlers["schedule"])

    graph = commands.add_parser("graph", help="print a workflow as a Mermaid diagram")
    add_app(graph, json_output=False)
    graph.add_argument("workflow", help="the workflow's name")
    graph.set_defaults(handler=handlers["graph"])

    # Developer-only: added without help, so the user's help leaves it out.
    tables = commands.add_parser("docs-tables")
    tables.add_argument("--write", required=True, metavar="FILE", help="Markdown file to update")
    tables.set_defaults(handler=handlers["docs-tables"])
    return parser
