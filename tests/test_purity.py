"""The core stays pure: no I/O, no clock, no ids, no randomness, no asyncio.

Two independent checks: an AST walk of every core module (this file), and the
import-linter contract in pyproject.toml. Both are shown to fail when a
forbidden import is added.
"""

from __future__ import annotations

import ast
import functools
import gc
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "squidmesh_core"

FORBIDDEN_MODULES = frozenset(
    {
        "asyncio",
        "time",
        "random",
        "secrets",
        "os",
        "uuid",
        "socket",
        "logging",
        "threading",
        "subprocess",
        "multiprocessing",
        "shutil",
        "pathlib",
        "io",
        "urllib",
        "http",
        "sqlite3",
        "signal",
        "select",
        "selectors",
        "psycopg",
        "psycopg_pool",
        "taskiq",
        "taskiq_redis",
        "httpx",
        "redis",
        "squidmesh_backends",
    }
)
FORBIDDEN_CALLS = frozenset({"now", "utcnow", "today", "uuid1", "uuid4", "time_ns", "monotonic"})
FORBIDDEN_BUILTINS = frozenset({"open", "print", "input", "exec", "eval", "__import__", "hash"})


def parse(source: str, filename: str = "<source>") -> ast.Module:
    """``ast.parse`` with the cyclic garbage collector paused.

    On CPython 3.11 the conversion of the parsed tree into ``ast`` objects keeps
    its recursion count in state shared by the whole interpreter. A garbage
    collection that runs in the middle of it can run Python code (finalizers,
    weakref callbacks), and when that code parses too, for instance pytest's
    unraisable-exception hook formatting a traceback (3.11's ``traceback``
    calls ``ast.parse`` to place its ``^^^`` markers), the inner parse resets
    the shared count and the outer one raises ``SystemError: AST constructor
    recursion depth mismatch``. Garbage left by earlier tests is why this
    happened in full runs only. With collection paused no Python code can run
    inside the conversion.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(source, filename)
    finally:
        if was_enabled:
            gc.enable()


def impurities(source: str, filename: str = "<source>") -> list[str]:
    """Every forbidden import or call in ``source``, as readable findings."""
    found: list[str] = []
    for node in ast.walk(parse(source, filename)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FORBIDDEN_MODULES:
                    found.append(f"{filename}:{node.lineno} imports {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] in FORBIDDEN_MODULES:
                found.append(f"{filename}:{node.lineno} imports from {node.module}")
            for alias in node.names:
                if alias.name in FORBIDDEN_CALLS:
                    found.append(f"{filename}:{node.lineno} imports {alias.name}")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in FORBIDDEN_CALLS:
                found.append(f"{filename}:{node.lineno} calls .{func.attr}()")
            if isinstance(func, ast.Name) and func.id in FORBIDDEN_BUILTINS | FORBIDDEN_CALLS:
                found.append(f"{filename}:{node.lineno} calls {func.id}()")
    return found


def core_modules() -> list[Path]:
    return sorted(p for p in CORE.rglob("*.py") if "testing" not in p.relative_to(CORE).parts)


def test_core_modules_are_found() -> None:
    names = {p.name for p in core_modules()}
    assert {"decide.py", "state.py", "retry.py", "payload.py"} <= names


@functools.cache
def _core_findings() -> dict[str, list[str]]:
    """Every core module's impurities, computed once in a fresh interpreter.

    Whatever earlier tests left behind (garbage with finalizers, threads, hooks)
    cannot reach a parse in a new process; ``parse`` guards the in-process
    parses of the snippets below against the one way it could (see there).
    """
    script = (
        "import json, sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]);"
        "from tests.test_purity import core_modules, impurities;"
        "print(json.dumps({str(p): impurities(p.read_text(), p.name) for p in core_modules()}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(ROOT)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found: dict[str, list[str]] = json.loads(done.stdout)
    return found


@pytest.mark.parametrize("module", core_modules(), ids=lambda p: p.name)
def test_core_module_is_pure(module: Path) -> None:
    assert _core_findings()[str(module)] == []


@pytest.mark.parametrize(
    ("snippet", "finding"),
    [
        ("import asyncio", "imports asyncio"),
        ("import os.path", "imports os.path"),
        ("from time import sleep", "imports from time"),
        ("from uuid import uuid4", "imports from uuid"),
        ("import httpx", "imports httpx"),
        ("from squidmesh_backends.runtime import x", "imports from squidmesh_backends.runtime"),
        ("from datetime import datetime\nx = datetime.now()", "calls .now()"),
        ("import datetime\nx = datetime.date.today()", "calls .today()"),
        ("x = open('f')", "calls open()"),
        ("x = hash('salted')", "calls hash()"),
        ("print('hi')", "calls print()"),
    ],
)
def test_the_walker_catches_forbidden_code(snippet: str, finding: str) -> None:
    assert any(finding in f for f in impurities(snippet))


def test_relative_imports_inside_the_core_are_allowed() -> None:
    assert impurities("from .state import RunState\nfrom datetime import datetime") == []


class ParsesWhenCollected:
    """Garbage whose finalizer parses, as pytest's unraisable hook does on 3.11."""

    def __init__(self) -> None:
        self.cycle = self  # only the cyclic collector frees it

    def __del__(self) -> None:
        ast.parse("x = 1")


def test_a_collection_during_the_parse_cannot_break_it() -> None:
    """Without the pause in ``parse``, 3.11 raises SystemError here (recursion depth mismatch)."""
    largest = max(core_modules(), key=lambda p: p.stat().st_size)
    source = largest.read_text()
    gc.disable()
    try:
        for _ in range(300):
            ParsesWhenCollected()
    finally:
        gc.enable()
    assert impurities(source, largest.name) == []
    gc.collect()


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(lint), "--config", str(cwd / "pyproject.toml")],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"},
    )


def test_import_contract_is_kept() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "The core is pure" in result.stdout
    assert " kept, 0 broken" in result.stdout


def test_import_contract_breaks_when_the_core_imports_io(tmp_path: Path) -> None:
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for package in ("squidmesh_core", "squidmesh_backends"):
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    (tmp_path / "squidmesh_core" / "leak.py").write_text("import httpx\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "squidmesh_core.leak -> httpx" in result.stdout
