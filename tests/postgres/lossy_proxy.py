"""A loopback TCP proxy in front of PostgreSQL that can lose a commit's reply.

A commit is either a transaction ending in ``COMMIT`` or the store's single
statement, which runs as its own transaction (it begins ``WITH w0 AS (``).
When armed, the next connection that sends one has the server's answer read
up to the ``ReadyForQuery`` that follows it (so the transaction is durable on
the server), and then both sides are closed without the client seeing it: the
client's view is "connection lost, outcome unknown".
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit, urlunsplit


class LossyProxy:
    def __init__(self, upstream_dsn: str) -> None:
        parts = urlsplit(upstream_dsn)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 5432
        self._parts = parts
        self.armed = 0
        self.dropped = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def dsn(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        netloc = f"{self._parts.username or 'postgres'}@127.0.0.1:{port}"
        return urlunsplit(self._parts._replace(netloc=netloc))

    async def __aenter__(self) -> LossyProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    def lose_next_commit_reply(self, count: int = 1) -> None:
        self.armed += count

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        current = asyncio.current_task()
        assert current is not None
        self._handlers.add(current)
        try:
            await self._pipe(client_r, client_w)
        finally:
            self._handlers.discard(current)

    async def _pipe(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        self._writers.update((client_w, server_w))
        doomed = asyncio.Event()

        async def upstream() -> None:
            while data := await client_r.read(65536):
                if self.armed and (b"COMMIT" in data or b"WITH w0 AS (" in data):
                    self.armed -= 1
                    doomed.set()
                server_w.write(data)
                await server_w.drain()

        async def downstream() -> None:
            seen = b""
            while data := await server_r.read(65536):
                if doomed.is_set():
                    seen += data
                    if b"Z\x00\x00\x00\x05" in seen:  # ReadyForQuery: the commit is done
                        self.dropped += 1
                        return
                    continue
                client_w.write(data)
                await client_w.drain()

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        with contextlib.suppress(Exception):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in (client_w, server_w):
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
