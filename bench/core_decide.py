"""Benchmark: pure `decide` throughput on a 10-step transitions workflow.

Runs complete runs (request, then deliver + succeed for each of the 10 steps:
21 decisions per run) in-process and reports decisions per second. Not part of
the test run; `make bench-core` runs it and rewrites the core section of
docs/performance.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from squidmesh_core import COMPLETE, RunId, WorkflowDefinition, chain, manual, step, workflow
from squidmesh_core.protocol import JobDelivered, LeaseToken, RunRequested, StepSucceeded, decide

STEPS = [f"s{i}" for i in range(10)]


def noop(data: object, ctx: object) -> dict[str, object]:
    return {}


def ten_steps() -> WorkflowDefinition:
    return workflow(
        "bench.ten",
        triggers=[manual()],
        steps=[step(name, noop) for name in STEPS],
        transitions=chain(*STEPS, COMPLETE),
    )


def one_run(definition: WorkflowDefinition, n: int, t0: datetime) -> int:
    run_id = RunId(f"00000000-0000-4000-8000-{n:012d}")
    state = decide(definition, None, RunRequested(run_id=run_id, payload={}), now=t0).unwrap().state
    decisions = 1
    token = LeaseToken("bench")
    now = t0
    while not state.status.terminal:
        job = state.jobs[0]
        now += timedelta(milliseconds=1)
        state = (
            decide(definition, state, JobDelivered(job_id=job.id, lease_token=token), now=now)
            .unwrap()
            .state
        )
        state = (
            decide(
                definition,
                state,
                StepSucceeded(job_id=job.id, lease_token=token, output={"i": 1}),
                now=now,
            )
            .unwrap()
            .state
        )
        decisions += 2
    return decisions


def measure(runs: int, rounds: int) -> list[float]:
    definition = ten_steps()
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    one_run(definition, 0, t0)  # warm-up
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        decisions = sum(one_run(definition, n, t0) for n in range(runs))
        rates.append(decisions / (time.perf_counter() - started))
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--write", type=Path, help="Markdown file whose core section to rewrite")
    args = parser.parse_args()
    rates = measure(args.runs, args.rounds)
    median = statistics.median(rates)
    lines = [
        "<!-- core-bench:start -->",
        f"Command: `python bench/core_decide.py --runs {args.runs} --rounds {args.rounds}`",
        f"Machine: {platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}, 1 process",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| decisions per second (median of {args.rounds}) | {median:,.0f} |",
        f"| slowest round | {min(rates):,.0f} |",
        f"| fastest round | {max(rates):,.0f} |",
        "<!-- core-bench:end -->",
    ]
    report = "\n".join(lines)
    print(report)
    if args.write:
        text = args.write.read_text()
        head, _, rest = text.partition("<!-- core-bench:start -->")
        _, _, tail = rest.partition("<!-- core-bench:end -->")
        args.write.write_text(head + report + tail)
    return 0


if __name__ == "__main__":
    sys.exit(main())
