"""The benchmarks run at tiny sizes, so they cannot rot between benchmark runs."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


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
