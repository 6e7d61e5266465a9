"""The benchmarks run at tiny sizes, so they cannot rot between benchmark runs."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.slow


def load(name: str) -> ModuleType:
    if str(ROOT / "bench") not in sys.path:
        sys.path.insert(0, str(ROOT / "bench"))  # as when run as `python bench/NAME.py`
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"bench_{name}"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_core_benchmark_runs_at_a_tiny_size() -> None:
    bench = load("core_decide")
    rates = bench.measure(3, 1)
    assert len(rates) == 1
    assert rates[0] > 0


def test_postgres_benchmark_runs_at_a_tiny_size() -> None:
    from tests.services import require_postgres

    dsn = require_postgres()
    bench = load("postgres_store")
    result = asyncio.run(bench.measure(3, 2, dsn))
    assert result.steps == 30
    # per run: created, first step started, 9 "outcome + next start", last outcome
    assert result.store_transactions == 3 * 12
    text = bench.report(result, "tiny")
    assert "| write transactions (commits) | 36 (1.20 per step" in text
    assert any("INSERT INTO squidmesh_jobs" in line for line in result.statement_list)
    assert not any("pg_notify" in line for line in result.statement_list)  # leased: no wake-up


def test_taskiq_benchmark_runs_at_a_tiny_size() -> None:
    from tests.services import require_postgres, require_redis

    require_postgres()
    require_redis()
    bench = load("taskiq_steps")
    raw, engines = asyncio.run(bench.measure(3, 3, 10))
    assert len(raw.serial.samples) == 3 and raw.burst_per_second > 0
    assert [e.inline for e in engines] == [True, False]
    assert all(e.steps_per_second > 0 for e in engines)
    assert "per-step overhead" in bench.report(raw, engines, "tiny")


def test_the_side_by_side_harness_runs_at_a_tiny_size(tmp_path: Path) -> None:
    """``make bench`` minus the peer: every scenario, the report and the README line."""
    from tests.services import require_postgres, require_redis

    dsn, redis_url = require_postgres(), require_redis()
    doc = tmp_path / "performance.md"
    doc.write_text("before\n<!-- compare:start -->\nold\n<!-- compare:end -->\nafter\n")
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- perf-line:start -->\nold\n<!-- perf-line:end -->\ny\n")
    saved = tmp_path / "results.json"
    prefix = f"smoke_{secrets.token_hex(4)}_"
    env = {**os.environ, "SQUIDMESH_BENCH_DSN": dsn, "SQUIDMESH_BENCH_REDIS": redis_url}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "compare.py"), "--tiny", "--db-prefix", prefix,
         "--json", str(saved), "--write", str(doc), "--readme", str(readme)],
        capture_output=True, text=True, env=env, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(saved.read_text())
    assert set(results["engines"]) == {"inprocess", "taskiq-inline", "taskiq-plain"}
    ours = results["engines"]["inprocess"]
    assert ours["serial"]["steps_10"]["n"] == 3
    assert ours["writes"]["write_transactions"] == pytest.approx(1.2)  # 12 commits a run
    assert results["scale"]["inprocess"][0]["runs"] == 10
    assert results["sql"], "the per-step statement list is missing"
    text = doc.read_text()
    assert text.startswith("before\n<!-- compare:start -->\nCommand:") and text.endswith("after\n")
    assert "| write transactions per step transition <= 1 | 1.00 | yes |" in text
    assert readme.read_text().startswith("x\n<!-- perf-line:start -->\n<!-- perf-line:end -->")


def test_the_readme_and_the_performance_page_show_the_saved_numbers() -> None:
    """The README's line and docs/performance.md are rendered from docs/performance.json."""
    compare = load("compare")
    saved = json.loads((ROOT / "docs" / "performance.json").read_text())
    results = compare.Results(**saved)
    assert compare.readme_line(results) in (ROOT / "README.md").read_text()
    assert compare.markdown(results) in (ROOT / "docs" / "performance.md").read_text()
    assert (ROOT / "docs" / "performance.png").stat().st_size > 10_000
