"""The ``squidmesh`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _smoke(args: argparse.Namespace) -> int:
    from squidmesh_backends.cli._core_smoke import check_smoke, run_core_smoke
    from squidmesh_backends.examples.payment_recovery import payment_recovery

    run, lines = run_core_smoke(
        payment_recovery,
        {"account_id": "acct-42", "invoice_id": "inv-7"},
        emit=args.verbose,
    )
    for line in lines:
        print(line)
    problems = check_smoke(run)
    for problem in problems:
        print(f"CHECK FAILED: {problem}", file=sys.stderr)
    if not problems:
        print("smoke: all checks passed")
    return 1 if problems else 0


START_MARK = "<!-- status-tables:start -->"
END_MARK = "<!-- status-tables:end -->"


def render_tables_into(text: str) -> str:
    """Replace the status-table section of a Markdown document with the code's tables."""
    from squidmesh_core._table import markdown_tables

    head, _, rest = text.partition(START_MARK)
    _, _, tail = rest.partition(END_MARK)
    return f"{head}{START_MARK}\n{markdown_tables()}\n{END_MARK}{tail}"


def _docs_tables(args: argparse.Namespace) -> int:
    from pathlib import Path

    path = Path(args.write)
    path.write_text(render_tables_into(path.read_text()))
    print(f"status tables written to {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="squidmesh", description="Durable workflows in code.")
    commands = parser.add_subparsers(dest="command", required=True)
    smoke = commands.add_parser(
        "smoke", help="run the example payment-recovery workflow end to end and check it"
    )
    smoke.add_argument("--verbose", action="store_true", help="print every emitted event")
    smoke.set_defaults(handler=_smoke)
    tables = commands.add_parser("docs-tables", help="write the status tables into a doc")
    tables.add_argument("--write", required=True, metavar="FILE", help="Markdown file to update")
    tables.set_defaults(handler=_docs_tables)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
