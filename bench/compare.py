"""SquidMesh next to DBOS Transact on the same PostgreSQL, in one run (``make bench``).

Each engine runs alone, in its own process and its own database on the same
server, one after the other, with the same scenarios (see ``_driver.py``):
serial latency, throughput at fixed concurrency, write amplification, timer
lateness and scale. The same run measures the floors next to them: plain
function calls (baseline), a raw Taskiq round trip on Redis (queue floor) and
the pure core's ``decide`` rate. It prints one table with the ratios the targets
are stated in, saves every number in a JSON file and, with ``--write``,
rewrites the comparison section of docs/performance.md and the README's
performance line.

DBOS runs from its own virtual environment (``--dbos-python``; ``make bench``
creates it with ``dbos==3.4.0``); without one, only SquidMesh is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import core_decide
import postgres_store
import psycopg
import taskiq_steps
from _sections import write_section

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ADMIN_DSN = os.environ.get("SQUIDMESH_BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/test")
START, END = "<!-- compare:start -->", "<!-- compare:end -->"
LINE_START, LINE_END = "<!-- perf-line:start -->", "<!-- perf-line:end -->"
DATABASES = {"squidmesh": "bench_squidmesh", "dbos": "bench_dbos"}
"""Each engine's own database on the server (``--db-prefix`` renames them)."""
SQUIDMESH_VARIANTS = ("inprocess", "taskiq-inline", "taskiq-plain")
LABELS = {
    "inprocess": "SquidMesh, in-process",
    "taskiq-inline": "SquidMesh via Taskiq, inline",
    "taskiq-plain": "SquidMesh via Taskiq, no inline",
    "dbos": "DBOS 3.4.0",
}


@dataclass(frozen=True)
class Sizes:
    """How much each scenario does; ``tiny`` is the smoke test's."""

    warmup: int = 50
    serial: int = 200
    throughput: int = 1000
    writes: int = 300
    idle: float = 5.0
    settle: float = 11.0
    timers: int = 300
    wait: float = 0.5
    scale: tuple[int, ...] = (1_000, 10_000, 100_000)
    dbos_scale: tuple[int, ...] = (1_000, 10_000, 100_000)
    raw_serial: int = 500
    raw_burst: int = 5_000
    core_runs: int = 2_000
    baseline: int = 20_000
    concurrency: tuple[int, ...] = (16, 64)

    @classmethod
    def tiny(cls) -> Sizes:
        return cls(
            warmup=2, serial=3, throughput=16, writes=8, idle=0.5, settle=0.5, timers=4, wait=0.05,
            scale=(10,), dbos_scale=(10,), raw_serial=3, raw_burst=10, core_runs=3,
            baseline=100, concurrency=(4,),
        )  # fmt: skip

    def spec(self) -> dict[str, Any]:
        return {
            "warmup": self.warmup,
            "serial": self.serial,
            "throughput": self.throughput,
            "concurrency": list(self.concurrency),
            "writes": self.writes,
            "idle": self.idle,
            "settle": self.settle,
            "timers": self.timers,
            "wait": self.wait,
        }


@dataclass
class Results:
    machine: dict[str, Any] = field(default_factory=dict)
    floors: dict[str, Any] = field(default_factory=dict)
    engines: dict[str, dict[str, Any]] = field(default_factory=dict)
    scale: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    sql: list[str] = field(default_factory=list)
    command: str = ""


# ------------------------------------------------------------------ databases


def database_url(name: str) -> str:
    base, _, _ = ADMIN_DSN.rpartition("/")
    return f"{base}/{name}"


def fresh_database(name: str) -> str:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return database_url(name)


def drop_database(name: str) -> None:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def server_settings() -> dict[str, str]:
    names = (
        "server_version", "shared_buffers", "synchronous_commit", "fsync", "wal_level",
        "checkpoint_timeout", "max_wal_size", "max_connections", "full_page_writes",
        "autovacuum",
    )  # fmt: skip
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        return {n: str(conn.execute(f"SHOW {n}").fetchone()[0]) for n in names}  # type: ignore[index]


# ------------------------------------------------------------------ runners


def run_engine(python: str, script: str, args: list[str], spec: dict[str, Any]) -> dict[str, Any]:
    """Run one engine's runner in its own process; its JSON result."""
    command = [python, str(HERE / "engines" / script), *args, "--spec", json.dumps(spec)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{script} {' '.join(args)} failed:\n{done.stderr[-4000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def squidmesh(variant: str, spec: dict[str, Any]) -> dict[str, Any]:
    url = fresh_database(DATABASES["squidmesh"])
    try:
        return run_engine(
            sys.executable, "squidmesh_engine.py", ["--variant", variant, "--dsn", url], spec
        )
    finally:
        drop_database(DATABASES["squidmesh"])


def dbos(python: str, spec: dict[str, Any]) -> dict[str, Any]:
    url = fresh_database(DATABASES["dbos"])
    try:
        return run_engine(python, "dbos_engine.py", ["--dsn", url], spec)
    finally:
        drop_database(DATABASES["dbos"])


# ------------------------------------------------------------------ floors


async def baseline(count: int) -> dict[str, float]:
    """The same ten no-op steps as plain coroutine calls: what no engine can beat."""

    async def noop(data: dict[str, object]) -> dict[str, object]:
        return {}

    async def ten() -> None:
        data: dict[str, object] = {}
        for _ in range(10):
            data = await noop(data)

    began = time.perf_counter()
    for _ in range(count):
        await ten()
    per_run = (time.perf_counter() - began) / count
    return {"per_run_us": per_run * 1e6, "per_step_us": per_run / 10 * 1e6}


def floors(sizes: Sizes) -> dict[str, Any]:
    raw = asyncio.run(taskiq_steps.raw_taskiq(sizes.raw_serial, sizes.raw_burst))
    rates = core_decide.measure(sizes.core_runs, 3)
    ordered = sorted(rates)
    return {
        "baseline": asyncio.run(baseline(sizes.baseline)),
        "taskiq": {
            "serial_ms": {
                "mean": raw.serial.mean * 1000,
                "p50": raw.serial.p50 * 1000,
                "p95": raw.serial.p95 * 1000,
            },
            "burst_per_s": raw.burst_per_second,
        },
        "core_decisions_per_s": ordered[len(ordered) // 2],
    }


def transition_sql() -> list[str]:
    """The statements of one step transition, as the store sends them."""
    url = fresh_database(DATABASES["squidmesh"])
    try:
        return asyncio.run(postgres_store.transition_statements(url))
    finally:
        drop_database(DATABASES["squidmesh"])


# ------------------------------------------------------------------ report


def ratios(results: Results) -> dict[str, float]:
    """The targets' ratios (only those whose inputs were measured)."""
    out: dict[str, float] = {}
    peer = results.engines.get("dbos")
    ours = results.engines.get("inprocess")
    raw = results.floors["taskiq"]["serial_ms"]["mean"]
    if peer and ours:
        for ours_t, peer_t in zip(ours["throughput"], peer["throughput"], strict=True):
            key = f"throughput_x_dbos_c{ours_t['concurrency']}"
            out[key] = ours_t["steps_per_s"] / peer_t["steps_per_s"]
        out["per_step_vs_dbos"] = ours["serial"]["per_step_ms"] / peer["serial"]["per_step_ms"]
        out["wal_vs_dbos"] = ours["writes"]["wal_bytes"] / peer["writes"]["wal_bytes"]
    inline = results.engines.get("taskiq-inline")
    if inline:
        out["taskiq_inline_per_step_vs_raw"] = inline["serial"]["per_step_ms"] / raw
    plain = results.engines.get("taskiq-plain")
    if plain:
        out["taskiq_plain_per_step_vs_raw"] = plain["serial"]["per_step_ms"] / raw
    return out


def _f(value: float, digits: int = 2) -> str:
    return f"{value:,.{digits}f}"


def table(results: Results) -> str:
    names = [n for n in (*SQUIDMESH_VARIANTS, "dbos") if n in results.engines]
    head = "| measure | " + " | ".join(LABELS[n] for n in names) + " |"
    rows = [head, "|---" * (len(names) + 1) + "|"]

    def row(label: str, get: Any) -> None:
        cells = []
        for n in names:
            try:
                cells.append(get(results.engines[n]))
            except (KeyError, IndexError, ZeroDivisionError):
                cells.append("n/a")
        rows.append(f"| {label} | " + " | ".join(cells) + " |")

    for size in (0, 1, 10):
        row(
            f"serial, {size}-step workflow: mean / p50 / p95 (ms)",
            lambda e, s=size: " / ".join(
                _f(e["serial"][f"steps_{s}"][k]) for k in ("mean", "p50", "p95")
            ),
        )
    row("per-step overhead, (T10 - T1) / 9 (ms)", lambda e: _f(e["serial"]["per_step_ms"]))
    for i, c in enumerate(results.engines[names[0]]["throughput"]):
        row(
            f"throughput at concurrency {c['concurrency']}: workflows/s, steps/s",
            lambda e, i=i: (
                f"{_f(e['throughput'][i]['workflows_per_s'], 1)}, "
                f"{_f(e['throughput'][i]['steps_per_s'], 0)}"
            ),
        )
    row("server transactions per step", lambda e: _f(e["writes"]["transactions"]))
    row(
        "rows inserted / updated / deleted per step",
        lambda e: " / ".join(_f(e["writes"][k]) for k in ("inserted", "updated", "deleted")),
    )
    row("WAL bytes per step", lambda e: _f(e["writes"]["wal_bytes"], 0))
    row(
        "idle background: transactions/s, WAL bytes/s",
        lambda e: (
            f"{_f(e['writes']['idle_transactions_per_s'], 1)}, "
            f"{_f(e['writes']['idle_wal_bytes_per_s'], 0)}"
        ),
    )
    row(
        "timer lateness p50 / p99 (ms)",
        lambda e: f"{_f(e['timers']['p50'])} / {_f(e['timers']['p99'])}",
    )
    return "\n".join(rows)


def scale_table(results: Results) -> str:
    rows = [
        "| engine | runs | start (s) | start + drain (s) | µs per run | peak RSS (MiB) "
        "| peak RSS growth per run (KiB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, points in results.scale.items():
        for p in points:
            rows.append(
                f"| {LABELS[name]} | {p['runs']:,} | {_f(p['start_s'])} | {_f(p['total_s'])} "
                f"| {_f(p['us_per_run'], 0)} | {_f(p['peak_rss_mb'], 0)} "
                f"| {_f(p['peak_growth_kb_per_run'], 3)} |"
            )
    return "\n".join(rows)


TARGETS = (
    ("throughput_x_dbos_c16", ">=", 2.0, "throughput (steps/s) vs DBOS at concurrency 16"),
    ("throughput_x_dbos_c64", ">=", 2.0, "throughput (steps/s) vs DBOS at concurrency 64"),
    ("per_step_vs_dbos", "<=", 0.5, "serial per-step overhead vs DBOS (in-process, inline)"),
    ("taskiq_inline_per_step_vs_raw", "<=", 1.2, "per-step overhead via Taskiq (inline) vs raw"),
    ("taskiq_plain_per_step_vs_raw", "<=", 1.2, "per-step overhead via Taskiq (no inline) vs raw"),
    ("wal_vs_dbos", "<=", 1.0, "WAL bytes per step vs DBOS"),
)  # fmt: skip


def transactions_per_transition(engine: dict[str, Any]) -> float:
    """SquidMesh's commits per step transition, from the store's own count.

    A 10-step run commits once to be created and then once per transition:
    the first step's start, nine "outcome + next start" commits and the last
    outcome, 11 transitions in all.
    """
    per_run = engine["writes"]["write_transactions"] * 10
    return float((per_run - 1) / 11)


def target_lines(results: Results) -> list[str]:
    measured = ratios(results)
    lines = ["| target | measured | met |", "|---|---|---|"]
    targets = list(TARGETS)
    for level in results.engines.get("inprocess", {}).get("throughput", []):
        c = level["concurrency"]
        if c not in (16, 64):
            targets.insert(0, (f"throughput_x_dbos_c{c}", ">=", 2.0, f"throughput vs DBOS, c={c}"))
    for key, op, bound, label in targets:
        if key in measured:
            value = measured[key]
            met = value >= bound if op == ">=" else value <= bound
            lines.append(f"| {label} {op} {bound} | {value:.2f} | {'yes' if met else '**no**'} |")
    ours = results.engines.get("inprocess")
    if ours:
        txn = transactions_per_transition(ours)
        lines.append(
            f"| write transactions per step transition <= 1 | {txn:.2f} | "
            f"{'yes' if txn <= 1.0 else '**no**'} |"
        )
        late = ours["timers"]["p99"]
        verdict = "yes" if late <= 100 else "**no**"
        lines.append(f"| timer lateness p99 <= 100 ms | {late:.1f} ms | {verdict} |")
    core = results.floors["core_decisions_per_s"]
    lines.append(
        f"| core decisions/s >= 100,000 | {core:,.0f} | {'yes' if core >= 100_000 else '**no**'} |"
    )
    return lines


def markdown(results: Results) -> str:
    m, f = results.machine, results.floors
    pg = m["postgres"]
    lines = [
        START,
        f"Command: `{results.command}`",
        "",
        f"Machine: {m['machine']}, {m['cores']} cores, CPython {m['python']}; "
        f"PostgreSQL {pg['server_version']} on loopback (shared_buffers {pg['shared_buffers']}, "
        f"synchronous_commit {pg['synchronous_commit']}, fsync {pg['fsync']}, "
        f"full_page_writes {pg['full_page_writes']}, wal_level {pg['wal_level']}, "
        f"checkpoint_timeout {pg['checkpoint_timeout']}, max_wal_size {pg['max_wal_size']}, "
        f"autovacuum {pg.get('autovacuum', '?')}); "
        f"Redis on loopback. Measured {m['date']}.",
        "",
        "Floors, measured in the same run:",
        "",
        f"- baseline, 10 no-op steps as plain calls: {_f(f['baseline']['per_run_us'])} µs a "
        f"workflow ({_f(f['baseline']['per_step_us'], 3)} µs a step);",
        "- raw Taskiq round trip on a RedisStreamBroker: mean "
        f"{_f(f['taskiq']['serial_ms']['mean'])} ms, "
        f"p50 {_f(f['taskiq']['serial_ms']['p50'])} ms, p95 "
        f"{_f(f['taskiq']['serial_ms']['p95'])} ms serial; {_f(f['taskiq']['burst_per_s'], 0)} "
        "messages/s in a burst;",
        f"- core `decide`, pure and in-process: {_f(f['core_decisions_per_s'], 0)} decisions/s.",
        "",
        table(results),
        "",
        "Ratios against the targets:",
        "",
        *target_lines(results),
        "",
        "Scale: one-step workflows started, then drained (each size in a fresh process):",
        "",
        scale_table(results),
        "",
        "![Latency percentiles and throughput per engine](performance.png)",
        "",
        "SquidMesh's writes in one step transition (step N's outcome recorded and step",
        "N+1 started under the same worker's lease): one statement, which is its own",
        "transaction, whose parts are these data-modifying CTEs; its final `SELECT`",
        "checks the guards (the run's version, the finished job's lease):",
        "",
        *[f"{i}. `{line}`" for i, line in enumerate(results.sql, 1)],
        END,
    ]
    return "\n".join(lines)


def readme_line(results: Results) -> str:
    ours, peer = results.engines.get("inprocess"), results.engines.get("dbos")
    if not ours or not peer:
        return f"{LINE_START}\n{LINE_END}"
    r = ratios(results)
    c = ours["throughput"][0]["concurrency"]
    return (
        f"{LINE_START}\n"
        f"Performance (from [docs/performance.md](docs/performance.md)): on one 2-core machine "
        f"and one PostgreSQL, SquidMesh ran {ours['throughput'][0]['steps_per_s']:,.0f} "
        f"steps/s at concurrency {c} ({r[f'throughput_x_dbos_c{c}']:.1f}x DBOS 3.4.0), "
        f"{ours['serial']['per_step_ms']:.2f} ms per step serially "
        f"({r['per_step_vs_dbos']:.2f}x DBOS) and wrote "
        f"{ours['writes']['wal_bytes']:,.0f} WAL bytes per step ({r['wal_vs_dbos']:.2f}x DBOS).\n"
        f"{LINE_END}"
    )


# ------------------------------------------------------------------ main


def measure(sizes: Sizes, dbos_python: str | None, command: str) -> Results:
    results = Results(command=command)
    results.machine = {
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "postgres": server_settings(),
        "date": time.strftime("%Y-%m-%d"),
    }
    print("floors: baseline, raw Taskiq, core decide", file=sys.stderr)
    results.floors = floors(sizes)
    spec = sizes.spec()
    for variant in SQUIDMESH_VARIANTS:
        print(f"engine: {variant}", file=sys.stderr)
        results.engines[variant] = squidmesh(variant, spec)
    if dbos_python:
        print("engine: dbos", file=sys.stderr)
        results.engines["dbos"] = dbos(dbos_python, spec)
    results.scale["inprocess"] = []
    for count in sizes.scale:
        print(f"scale: squidmesh {count}", file=sys.stderr)
        point = squidmesh("inprocess", {"scale": count})["scale"]
        results.scale["inprocess"].append(point)
    if dbos_python:
        results.scale["dbos"] = []
        for count in sizes.dbos_scale:
            print(f"scale: dbos {count}", file=sys.stderr)
            results.scale["dbos"].append(dbos(dbos_python, {"scale": count})["scale"])
    results.sql = transition_sql()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dbos-python", help="python of the environment holding dbos==3.4.0")
    parser.add_argument("--tiny", action="store_true", help="smoke-test sizes")
    parser.add_argument("--json", type=Path, help="where to save every number")
    parser.add_argument("--write", type=Path, help="docs/performance.md, to rewrite its section")
    parser.add_argument("--readme", type=Path, help="README.md, to rewrite its performance line")
    parser.add_argument("--plot", type=Path, help="PNG to draw (with --dbos-python's matplotlib)")
    parser.add_argument("--db-prefix", default="bench_", help="names of the engines' databases")
    parser.add_argument(
        "--from-json", type=Path, help="report the numbers saved by an earlier run, measure nothing"
    )
    args = parser.parse_args()
    for engine in DATABASES:
        DATABASES[engine] = f"{args.db_prefix}{engine}"
    if args.from_json:
        results = Results(**json.loads(args.from_json.read_text()))
    else:
        sizes = Sizes.tiny() if args.tiny else Sizes()
        command = "make bench" if not args.tiny else "python bench/compare.py --tiny"
        results = measure(sizes, args.dbos_python, command)
    text = markdown(results)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(results.__dict__, indent=1) + "\n")
    if args.write:
        write_section(args.write, START, END, text)
    if args.readme:
        write_section(args.readme, LINE_START, LINE_END, readme_line(results))
    if args.plot and args.json and args.dbos_python:
        subprocess.run(
            [args.dbos_python, str(HERE / "plot.py"), str(args.json), str(args.plot)], check=True
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
