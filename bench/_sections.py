"""Rewriting one marked section of a Markdown file (the benchmarks' results)."""

from __future__ import annotations

from pathlib import Path


def write_section(path: Path, start: str, end: str, text: str) -> None:
    """Replace the text between ``start`` and ``end`` in ``path`` (markers included)."""
    doc = path.read_text()
    head, _, rest = doc.partition(start)
    _, _, tail = rest.partition(end)
    path.write_text(head + text + tail)
