"""A small HTTP/1.1 server on loopback for the HTTP tool's tests.

Paths: ``/status/<code>`` (``?retry_after=`` adds the header), ``/slow?delay=s``,
``/reset`` (closes the connection without answering), ``/malformed`` (a JSON
content type with a broken body), ``/text``, ``/redirect``, and ``/echo``
(answers with what it received).
"""

from __future__ import annotations

import asyncio
import json
from typing import Self
from urllib.parse import parse_qs, urlsplit


class LoopbackServer:
    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self.url = ""
        self.hits = 0

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            self.hits += 1
            request_line, *header_lines = head.split("\r\n")
            method, target, _ = request_line.split(" ", 2)
            headers = {
                k.strip().lower(): v.strip()
                for k, v in (line.split(":", 1) for line in header_lines if ":" in line)
            }
            length = int(headers.get("content-length", "0"))
            body = (await reader.readexactly(length)).decode() if length else ""
            url = urlsplit(target)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            await self._answer(writer, (method, url.path, query, headers, body))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _answer(
        self,
        writer: asyncio.StreamWriter,
        request: tuple[str, str, dict[str, str], dict[str, str], str],
    ) -> None:
        method, path, query, headers, body = request
        if path == "/reset":
            return  # close without a response
        status, content_type, payload, extra = 200, "application/json", b"{}", ""
        if path.startswith("/status/"):
            status = int(path.rsplit("/", 1)[1])
            payload = json.dumps({"code": status}).encode()
            if "retry_after" in query:
                extra = f"Retry-After: {query['retry_after']}\r\n"
        elif path == "/slow":
            await asyncio.sleep(float(query.get("delay", "1")))
        elif path == "/malformed":
            payload = b'{"broken": '
        elif path == "/text":
            content_type, payload = "text/plain; charset=utf-8", "h\u00e9llo".encode()
        elif path == "/redirect":
            status, extra = 302, "Location: /echo\r\n"
        elif path == "/echo":
            payload = json.dumps(
                {"method": method, "path": path, "query": query, "headers": headers, "body": body}
            ).encode()
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\n{extra}"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
            + payload
        )
        await writer.drain()
