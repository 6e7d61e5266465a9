"""Every Python code block in the README and the guides runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

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


@pytest.mark.parametrize(("name", "code"), blocks(), ids=[name for name, _ in blocks()])
def test_code_block_runs(name: str, code: str) -> None:
    exec(compile(code, name, "exec", dont_inherit=True), {"__name__": "docs_example"})
