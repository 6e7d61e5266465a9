"""Every Python code block in the README and the guides runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import drop_schema, require_postgres

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def blocks() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for index, code in enumerate(BLOCK.findall(doc.read_text())):
            found.append((f"{doc.relative_to(ROOT)}#{index}", code))
    return found


def test_the_readme_has_code_to_check() -> None:
    assert any(name.startswith("README.md") for name, _ in blocks())


DOCS_SCHEMA = "squidmesh"
"""The schema the PostgreSQL examples use; dropped after each of them."""


@pytest.fixture
def postgres_if_needed(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """For a block that mentions SQUIDMESH_DSN: the DSN to give it, and clean-up after."""
    code = request.node.callspec.params["code"]
    if "SQUIDMESH_DSN" not in code:
        yield {}
        return
    dsn = require_postgres()
    drop_schema(dsn, DOCS_SCHEMA)
    yield {"SQUIDMESH_DSN": dsn}
    drop_schema(dsn, DOCS_SCHEMA)


@pytest.mark.parametrize(("name", "code"), blocks(), ids=[name for name, _ in blocks()])
def test_code_block_runs(
    name: str, code: str, postgres_if_needed: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in postgres_if_needed.items():
        monkeypatch.setenv(key, value)
    exec(compile(code, name, "exec", dont_inherit=True), {"__name__": "docs_example"})


SHELL = re.compile(r"```sh\n(.*?)```", re.DOTALL)


def shell_blocks() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for index, code in enumerate(SHELL.findall(doc.read_text())):
            found.append((f"{doc.relative_to(ROOT)}#sh{index}", code))
    return found


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize(("name", "code"), shell_blocks(), ids=[name for name, _ in shell_blocks()])
def test_shell_block_runs(
    name: str, code: str, tmp_path: Path, postgres_if_needed: dict[str, str]
) -> None:
    # `make test` is the command running this very test; every other line runs.
    code = "\n".join(
        ": make test is this suite" if line.strip().startswith("make test") else line
        for line in code.splitlines()
    )
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "SQUIDMESH_EXAMPLE_DB": str(tmp_path / "example.db"),
        **postgres_if_needed,
    }
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"{name}:\n{result.stdout}\n{result.stderr}"


def test_the_event_catalogue_names_every_topic() -> None:
    from squidmesh_core.commands import Topic

    page = (ROOT / "docs" / "observability.md").read_text()
    missing = [t.value for t in Topic if f"| `{t.value}` |" not in page]
    assert missing == []
