"""Small asyncio helpers shared by the adapters."""

from __future__ import annotations

import asyncio


class LoopLock:
    """An ``asyncio.Lock`` per event loop.

    asyncio primitives belong to the loop that first waits on them; an adapter
    reused from a new loop (the blocking facade entered twice) needs a new one.
    """

    def __init__(self) -> None:
        self._current: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None

    def get(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._current is None or self._current[0] is not loop:
            self._current = (loop, asyncio.Lock())
        return self._current[1]
