"""The CLI's output: colours only on a terminal, tables never fold ids, run data is never markup."""

from __future__ import annotations

import io

import pytest

from squidmesh_backends.cli import console
from squidmesh_backends.cli.render import table


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


HOSTILE = ("[bold red]forged[/bold red]", "line\x1b[2Jwiped", "a\nb")


@pytest.mark.parametrize("stream", [io.StringIO(), Terminal()], ids=["piped", "terminal"])
def test_tables_keep_ids_whole_and_show_run_data_as_text(
    stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdout", stream)
    monkeypatch.setenv("COLUMNS", "40")
    long_id = "544d9bf7-5273-40d5-bb52-fdde07eca9fb"
    console.show(
        table(
            [
                ("id", "status", "note"),
                (long_id, "failed", HOSTILE[0]),
                *((long_id, "completed", text) for text in HOSTILE[1:]),
            ],
            status_column=1,
        )
    )
    out = stream.getvalue()
    assert long_id in out  # never folded, however narrow the terminal
    assert "[bold red]forged[/bold red]" in out  # shown, not applied
    assert "\x1b[2J" not in out and "line\\x1b[2Jwiped" in out and "a\\nb" in out
    coloured = "\x1b[31m" in out or "\x1b[1;31m" in out
    assert coloured is isinstance(stream, Terminal)
