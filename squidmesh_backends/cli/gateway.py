"""A tiny HTTP gateway stub on loopback, answering scripted responses in order."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Self

from squidmesh_core.jsonvalue import JsonValue


class GatewayStub:
    """Answers each request with the next scripted ``(status, body)``; the last one repeats."""

    def __init__(self, responses: Sequence[tuple[int, JsonValue]]) -> None:
        if not responses:
            raise ValueError("at least one scripted response is needed")
        self.responses = list(responses)
        self.requests: list[str] = []
        self._server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, host="127.0.0.1", port=0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/status"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            self.requests.append(head.split(b"\r\n", 1)[0].decode("latin-1"))
            index = min(len(self.requests) - 1, len(self.responses) - 1)
            status, body = self.responses[index]
            payload = json.dumps(body).encode()
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
