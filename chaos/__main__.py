"""``python -m chaos``: run the fault experiments against servers of their own, print figures.

    python -m chaos                      # the full suite (make chaos)
    python -m chaos --size small         # the CI-sized one
    python -m chaos --only kill9 redis   # some experiments
    python -m chaos --write docs/reliability.md

Exit code 0 when every experiment passed (every run completed, every step that
ran twice is explained by a lost attempt, refused input wrote nothing), 1
otherwise, 2 when a server could not be started.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from chaos.experiments import EXPERIMENTS, SIZES
from chaos.lab import Figures, Lab
from chaos.servers import MissingServerError, OwnPostgres, OwnRedis

START = "<!-- chaos:results:start -->"
END = "<!-- chaos:results:end -->"
HEADER = (
    "| experiment | runs (completed) | faults | lost attempts | steps run twice (unexplained)"
    " | reclaim min / median / max | drain | rows from refused input / entries left pending"
    " | passed |"
)


def _seconds(value: float) -> str:
    return f"{value:.1f} s"


def row(f: Figures) -> str:
    reclaim = " / ".join(_seconds(x) for x in f.reclaim) if f.reclaim else "-"
    refused = "-" if f.refused_rows is None else f"{f.refused_rows} / {f.pending}"
    return (
        f"| {f.name} | {f.runs} ({f.completed}) | {f.faults} | {f.lost_attempts}"
        f" | {f.repeated_steps} ({f.unexplained}) | {reclaim} | {_seconds(f.drain)}"
        f" | {refused} | {'yes' if f.passed else '**no**'} |"
    )


def table(results: Sequence[Figures]) -> str:
    return "\n".join([HEADER, "|" + "---|" * 9, *(row(f) for f in results)])


def machine() -> str:
    return (
        f"{platform.node() or 'host'}: {os.cpu_count()} cores, Python {platform.python_version()}"
    )


def section(results: Sequence[Figures], size: str, took: float) -> str:
    command = "make chaos" if size == "full" else f"python -m chaos --size {size}"
    notes = [f"- {f.name}: {f.notes}" for f in results if f.notes]
    return "\n".join(
        [
            START,
            f"Last run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, `{command}`, {_seconds(took)}"
            f" in all, on {machine()}.",
            "",
            table(results),
            *(["", *notes] if notes else []),
            END,
        ]
    )


def write_section(path: Path, text: str) -> None:
    doc = path.read_text()
    head, _, rest = doc.partition(START)
    _, _, tail = rest.partition(END)
    path.write_text(head + text + tail)


async def run(names: Sequence[str], size: str) -> list[Figures]:
    postgres, redis = OwnPostgres(), OwnRedis()
    root = Path(tempfile.mkdtemp(prefix="squidmesh-chaos-"))
    try:
        await asyncio.to_thread(postgres.init)
        await asyncio.to_thread(postgres.start)
        await asyncio.to_thread(redis.start)
        lab = Lab(postgres=postgres, redis=redis, root=root)
        results = []
        for name in names:
            began = time.monotonic()
            figures = await EXPERIMENTS[name](lab, SIZES[size]["default"])
            results.append(figures)
            print(f"{row(figures)}  ({time.monotonic() - began:.0f} s)", flush=True)
            for worker in list(lab.workers):
                await asyncio.to_thread(worker.kill)
            lab.workers = []
        return results
    finally:
        await asyncio.to_thread(redis.destroy)
        await asyncio.to_thread(postgres.destroy)
        shutil.rmtree(root, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--only", nargs="+", choices=sorted(EXPERIMENTS), default=None)
    parser.add_argument("--write", type=Path, help="rewrite the results section of this file")
    args = parser.parse_args(argv)
    names = args.only or list(EXPERIMENTS)
    print(HEADER, flush=True)
    began = time.monotonic()
    try:
        results = asyncio.run(run(names, args.size))
    except MissingServerError as exc:
        print(f"chaos: {exc}", file=sys.stderr)
        return 2
    took = time.monotonic() - began
    if args.write is not None:
        write_section(args.write, section(results, args.size, took))
    passed = all(f.passed for f in results)
    print(f"chaos: {len(results)} experiment(s), {'all passed' if passed else 'FAILED'}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
