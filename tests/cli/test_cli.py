from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from squidmesh_backends.cli.main import END_MARK, START_MARK, main, render_tables_into
from squidmesh_core._table import markdown_tables

ROOT = Path(__file__).resolve().parents[2]


def squidmesh(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    script = shutil.which("squidmesh", path=str(Path(sys.executable).parent))
    assert script is not None, "the console script is installed with the package"
    return subprocess.run(
        [script, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_smoke_command_completes_the_example_run(tmp_path: Path) -> None:
    result = squidmesh("smoke", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(
        "run 00000000-0000-4000-8000-000000000001 of billing.payment_recovery"
    )
    assert any("check_gateway" in line and "attempt 1  failed" in line for line in lines)
    assert any("check_gateway" in line and "attempt 2  succeeded" in line for line in lines)
    assert "run finished completed" in result.stdout
    assert lines[-1] == "smoke: all checks passed"


def test_smoke_verbose_prints_events(tmp_path: Path) -> None:
    result = squidmesh("smoke", "--verbose", cwd=tmp_path)
    assert result.returncode == 0
    assert "event step.retry_scheduled" in result.stdout
    assert "event run.transition {'from': 'running', 'to': 'completed'}" in result.stdout


def test_unknown_command_fails_with_usage(tmp_path: Path) -> None:
    result = squidmesh("fly", cwd=tmp_path)
    assert result.returncode == 2
    assert "usage: squidmesh" in result.stderr


def test_architecture_doc_shows_the_code_tables() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    assert f"{START_MARK}\n{markdown_tables()}\n{END_MARK}" in text


def test_docs_tables_rewrites_the_section(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n{START_MARK}\nstale\n{END_MARK}\noutro\n")
    assert main(["docs-tables", "--write", str(doc)]) == 0
    assert doc.read_text() == render_tables_into(f"intro\n{START_MARK}\n{END_MARK}\noutro\n")
    assert "stale" not in doc.read_text()
