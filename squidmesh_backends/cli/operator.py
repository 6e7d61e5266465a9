"""The operator's ``run`` commands: explain, unblock, approve, reject, signal (and who/why options).

Each acts as a client: it changes one run through the audited commands and
never runs a step. ``--idempotency-key`` makes a command safe to repeat (the
same key answers with the first receipt).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from returns.result import Result

from squidmesh_backends.runtime.runtime import Runtime

ACTIONS = ("explain", "unblock", "approve", "reject", "signal")


def add_who(parser: argparse.ArgumentParser, *, actor_required: bool) -> None:
    """``--actor``, ``--note`` and ``--idempotency-key``."""
    parser.add_argument(
        "--actor",
        required=actor_required,
        help="who issues the command (recorded in the audit trail)"
        + ("" if actor_required else "; optional"),
    )
    parser.add_argument("--note", help="why (recorded in the audit trail)")
    parser.add_argument(
        "--idempotency-key",
        help="repeating the command with the same key has one effect and prints the first receipt",
    )


def add_operator_commands(
    actions: argparse._SubParsersAction[argparse.ArgumentParser],
    with_app: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
) -> None:
    """Add ``run explain|unblock|approve|reject|signal``."""
    explain = with_app(
        actions.add_parser("explain", help="why a run is where it is and what can be done next")
    )
    explain.add_argument("run_id", help="the run's id")
    for name, text in (
        ("unblock", "let a run paused at a pause step go on"),
        ("approve", "approve a run waiting at an approval step"),
        ("reject", "reject a run waiting at an approval step"),
    ):
        parser = with_app(actions.add_parser(name, help=text))
        parser.add_argument("run_id", help="the run's id")
        add_who(parser, actor_required=True)
    signal = with_app(actions.add_parser("signal", help="send a signal to a run"))
    signal.add_argument("run_id", help="the run's id")
    signal.add_argument("name", help="the signal's name")
    signal.add_argument(
        "--payload", default="{}", help="the signal's payload as a JSON object (default: {})"
    )
    signal.add_argument("--actor", help="who sends it (recorded in the audit trail)")
    signal.add_argument("--note", help="why (recorded in the audit trail)")
    signal.add_argument(
        "--idempotency-key", help="a repeated signal with the same key is delivered once"
    )


async def operate(
    runtime: Runtime, args: argparse.Namespace, read_json: Callable[[str], object]
) -> Result[object, object]:
    """Run one operator command (the caller prints the result)."""
    if args.action == "explain":
        return await runtime.explain_run(args.run_id)
    who = {"actor": args.actor, "idempotency_key": args.idempotency_key}
    match args.action:
        case "unblock":
            return await runtime.unblock_run(args.run_id, note=args.note, **who)
        case "approve":
            return await runtime.approve_run(args.run_id, note=args.note, **who)
        case "reject":
            return await runtime.reject_run(args.run_id, note=args.note, **who)
        case "signal":
            payload = read_json(args.payload)
            return await runtime.send_signal(args.run_id, args.name, payload, note=args.note, **who)
    raise AssertionError(args.action)
