"""Where the CLI's output goes: Rich on the terminal, plain text everywhere else.

Colours and terminal widths only apply when the stream is a terminal; piped
output is plain and wide (no wrapping that would split an id). Text that holds
run data is never read as Rich markup: tables hold ``Text`` cells, and lines
are printed as they are.
"""

from __future__ import annotations

import io
import sys
from typing import TextIO

from rich.console import Console, RenderableType


def console(stream: TextIO | None = None) -> Console:
    """A console on ``stream`` (stdout): colours only on a terminal, wide when piped."""
    target = stream if stream is not None else sys.stdout
    tty = target.isatty()
    return Console(file=target, highlight=False, width=None if tty else 200, soft_wrap=not tty)


def show(renderable: RenderableType, *, err: bool = False) -> None:
    """Print a table or group on stdout (or stderr): Rich on a terminal, else plain lines."""
    stream = sys.stderr if err else sys.stdout
    if stream.isatty():  # as wide as the table needs: the terminal wraps, cells never fold
        terminal = console(stream)
        wanted = terminal.measure(renderable, options=terminal.options.update_width(1000))
        Console(file=stream, highlight=False, width=max(terminal.width, wanted.maximum)).print(
            renderable
        )
    else:
        print(plain(renderable), file=stream)


def print_text(text: str, *, err: bool = False) -> None:
    """Print a line as it is (never as markup) on stdout (or stderr)."""
    print(text, file=sys.stderr if err else sys.stdout, flush=err)


def plain(renderable: RenderableType) -> str:
    """What ``renderable`` prints as, without colours (for logs and files)."""
    out = io.StringIO()
    Console(file=out, width=200, color_system=None, highlight=False).print(renderable)
    return "\n".join(line.rstrip() for line in out.getvalue().rstrip("\n").splitlines())
