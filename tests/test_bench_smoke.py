"""The benchmarks run at tiny sizes, so they cannot rot between benchmark runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_core_benchmark_runs_at_a_tiny_size() -> None:
    bench = load("core_decide")
    rates = bench.measure(3, 1)
    assert len(rates) == 1
    assert rates[0] > 0
