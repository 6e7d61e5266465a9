"""``HttpTool``: HTTP calls from steps, on one pooled ``httpx.AsyncClient``, with typed outcomes.

A request is a mapping (or :class:`HttpRequest`) with ``method``, ``url`` and
optionally ``headers``, ``params``, ``json`` or ``body``, and ``timeout``
(seconds). It is checked before any I/O; a bad one is an ``invalid_request``
error. The tool never retries by itself (retries are the workflow's, decided by
the core and persisted) and never follows redirects (a 3xx is a result).

Outcomes:

* 2xx and 3xx: ``ToolResult`` with ``status``, ``headers`` (lower-case names) and
  ``body`` (decoded JSON for JSON content types, else text).
* 4xx: ``http`` error, not retryable, except 408, 425 and 429, which are.
* 5xx: ``http`` error, retryable.
* ``Retry-After`` (seconds or an HTTP date) becomes the error's ``retry_after``.
* Connect, read, write or pool timeouts: ``timeout``, retryable.
* Other transport failures (refused, reset, protocol errors): ``transport``, retryable.
* A JSON content type whose body does not decode: ``invalid_response``, not retryable.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Self

import httpx
from returns.result import Failure, Result, Success

from squidmesh_backends.tools.base import ToolError, ToolErrorKind, ToolResult
from squidmesh_core.context import StepContext
from squidmesh_core.jsonvalue import JsonObject, JsonValue, check_json, make_storable_text

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
RETRYABLE_4XX = frozenset({408, 425, 429})
FIELDS = frozenset({"method", "url", "headers", "params", "json", "body", "timeout"})
MAX_TIMEOUT = 300.0
MAX_RESPONSE_BYTES = 1024 * 1024
MAX_RETRY_AFTER = timedelta(days=1)
"""A remote cannot push a retry further out than this."""
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_VALUE = re.compile(r"^[\x20-\x7e\t]*$")


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpRequest:
    """A checked request."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)
    json: JsonValue = None
    body: str | None = None
    timeout: float | None = None


def parse_request(raw: object) -> Result[HttpRequest, str]:
    """Check a request mapping; the error says what is wrong."""
    if isinstance(raw, HttpRequest):
        raw = {
            "method": raw.method,
            "url": raw.url,
            "headers": dict(raw.headers),
            "params": dict(raw.params),
            "json": raw.json,
            "body": raw.body,
            "timeout": raw.timeout,
        }
    if not isinstance(raw, Mapping):
        return Failure("the request must be a mapping with at least 'method' and 'url'")
    unknown = sorted(set(map(str, raw)) - FIELDS)
    if unknown:
        return Failure(f"unknown request fields: {', '.join(unknown)}")
    method = raw.get("method")
    if not isinstance(method, str) or method.upper() not in METHODS:
        return Failure(f"method must be one of {', '.join(sorted(METHODS))}")
    url = raw.get("url")
    if not isinstance(url, str) or not _clean(url):
        return Failure("url must be a string without control characters")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        return Failure(f"url is not valid: {exc}")
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return Failure("url must be an absolute http:// or https:// URL")
    headers = raw.get("headers") or {}
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) and _TOKEN.match(k) and _VALUE.match(v)
        for k, v in headers.items()
    ):
        return Failure(
            "headers must map header names (RFC 9110 tokens) to printable ASCII values "
            "without control characters"
        )
    params = raw.get("params") or {}
    if not isinstance(params, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str | int | float) and not isinstance(v, bool)
        for k, v in params.items()
    ):
        return Failure("params must map names to strings or numbers")
    body = raw.get("body")
    payload = raw.get("json")
    if body is not None and payload is not None:
        return Failure("give either json or body, not both")
    if body is not None and not isinstance(body, str):
        return Failure("body must be a string (send JSON with 'json')")
    if payload is not None:
        checked = check_json(payload)
        if isinstance(checked, Failure):
            problem = checked.failure()
            return Failure(f"json{problem.path[1:]} {problem.reason}")
    timeout = raw.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or not 0 < timeout <= MAX_TIMEOUT
    ):
        return Failure(f"timeout must be a number of seconds above 0 and at most {MAX_TIMEOUT:g}")
    return Success(
        HttpRequest(
            method=method.upper(),
            url=url,
            headers=dict(headers),
            params={k: str(v) for k, v in params.items()},
            json=payload,
            body=body,
            timeout=None if timeout is None else float(timeout),
        )
    )


def _clean(text: str) -> bool:
    """No CR, LF or NUL: the HTTP request-line rule, not the storage one.

    A URL httpx cannot encode (a lone surrogate) is refused by its parser.
    """
    return not any(ch in text for ch in "\r\n\x00")


class HttpTool:
    """HTTP through one pooled async client. Close it with ``aclose`` (or ``async with``).

    Args:
        name: the tool's name in errors and failure details.
        client: an ``httpx.AsyncClient`` to use (not closed by the tool);
            by default the tool makes and owns one.
        idempotency_header: send the step's stable idempotency key in this
            header when a ``StepContext`` is given (e.g. ``"Idempotency-Key"``).
        default_timeout: seconds, when a request names none.
    """

    def __init__(
        self,
        *,
        name: str = "http",
        client: httpx.AsyncClient | None = None,
        idempotency_header: str | None = None,
        default_timeout: float = 10.0,
    ) -> None:
        self._name = name
        self._client = client
        self._owns_client = client is None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.idempotency_header = idempotency_header
        self.default_timeout = default_timeout

    @property
    def name(self) -> str:
        return self._name

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client the tool made (a given client is left to its owner)."""
        client, self._client = self._client, None if self._owns_client else self._client
        if client is not None and self._owns_client:
            await client.aclose()

    def _http(self) -> httpx.AsyncClient:
        # An owned client belongs to the event loop it was made on; a tool used
        # from a new loop (a blocking facade entered again) makes a new one.
        loop = asyncio.get_running_loop()
        if self._owns_client and (self._client is None or self._loop is not loop):
            self._client = httpx.AsyncClient(follow_redirects=False)
            self._loop = loop
        assert self._client is not None
        return self._client

    def _error(
        self,
        kind: ToolErrorKind,
        message: str,
        *,
        retryable: bool,
        details: JsonObject | None = None,
        retry_after: timedelta | None = None,
    ) -> Failure[ToolError]:
        return Failure(
            ToolError(
                tool=self._name,
                kind=kind,
                message=message,
                retryable=retryable,
                details=details or {},
                retry_after=retry_after,
            )
        )

    async def call(
        self, request: object, context: StepContext | None
    ) -> Result[ToolResult, ToolError]:
        parsed = parse_request(request)
        if isinstance(parsed, Failure):
            return self._error(ToolErrorKind.INVALID_REQUEST, parsed.failure(), retryable=False)
        req = parsed.unwrap()
        headers = dict(req.headers)
        if self.idempotency_header and context is not None:
            headers[self.idempotency_header] = context.idempotency_key
        where: JsonObject = {"method": req.method, "url": _safe_url(req.url)}
        try:
            async with self._http().stream(
                req.method,
                req.url,
                headers=headers,
                params=dict(req.params) or None,  # an empty mapping would drop the URL's query
                json=req.json,
                content=req.body,
                timeout=req.timeout or self.default_timeout,
            ) as response:
                content, complete = await _read_bounded(response)
        except httpx.TimeoutException as exc:
            return self._error(
                ToolErrorKind.TIMEOUT,
                f"{self._name} timed out ({type(exc).__name__})",
                retryable=True,
                details=where,
            )
        except httpx.LocalProtocolError as exc:
            return self._error(
                ToolErrorKind.INVALID_REQUEST,
                f"{self._name} could not send the request: {exc}",
                retryable=False,
                details=where,
            )
        except httpx.HTTPError as exc:
            return self._error(
                ToolErrorKind.TRANSPORT,
                f"{self._name} transport failed: {type(exc).__name__}: {exc}",
                retryable=True,
                details=where,
            )
        return self._outcome(response, content, complete, where)

    def _outcome(
        self, response: httpx.Response, content: bytes, complete: bool, where: JsonObject
    ) -> Result[ToolResult, ToolError]:
        status = response.status_code
        details: JsonObject = {**where, "status": status}
        text = _text(content, response.encoding)
        if status >= 400:
            retryable = status >= 500 or status in RETRYABLE_4XX
            return self._error(
                ToolErrorKind.HTTP,
                f"{self._name} answered {status}",
                retryable=retryable,
                details={**details, "body": text[:2000]},
                retry_after=_retry_after(response.headers.get("retry-after")),
            )
        if not complete:
            return self._error(
                ToolErrorKind.INVALID_RESPONSE,
                f"{self._name} answered with more than {MAX_RESPONSE_BYTES} bytes",
                retryable=False,
                details=details,
            )
        body: JsonValue
        content_type = response.headers.get("content-type", "")
        if "json" in content_type.lower() and content:
            try:
                body = json.loads(content)
            except (ValueError, RecursionError) as exc:
                return self._error(
                    ToolErrorKind.INVALID_RESPONSE,
                    f"{self._name} answered {status} with a body that is not JSON: "
                    f"{type(exc).__name__}",
                    retryable=False,
                    details=details,
                )
            checked = check_json(body)
            if isinstance(checked, Failure):
                return self._error(
                    ToolErrorKind.INVALID_RESPONSE,
                    f"{self._name} answered JSON that cannot be stored: {checked.failure().reason}",
                    retryable=False,
                    details=details,
                )
        else:
            body = text
        headers = {k.lower(): _text(v.encode("latin-1", "replace"), "latin-1")
                   for k, v in response.headers.items()}  # fmt: skip
        return Success(
            ToolResult(
                tool=self._name,
                value={**where, "status": status, "headers": headers, "body": body},
            )
        )


async def _read_bounded(response: httpx.Response) -> tuple[bytes, bool]:
    """The (decompressed) body, read only up to the size limit; and whether it was all read."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        room = MAX_RESPONSE_BYTES - size
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            chunks.append(chunk[:room])
            return b"".join(chunks), False
        chunks.append(chunk)
    return b"".join(chunks), True


def _text(content: bytes, encoding: str | None) -> str:
    """Bytes as storable text: undecodable bytes, NUL and lone surrogates become U+FFFD."""
    try:
        text = content.decode(encoding or "utf-8", errors="replace")
    except LookupError:
        text = content.decode("utf-8", errors="replace")
    # Some codecs a server may name (utf-7, unicode_escape) decode to lone surrogates.
    return make_storable_text(text, replacement="\ufffd")


def _safe_url(url: str) -> str:
    """The URL for error details, without credentials or query string."""
    try:
        parsed = httpx.URL(url)
        return str(parsed.copy_with(username=None, password=None, query=None))
    except (httpx.InvalidURL, ValueError):
        return "<invalid url>"


def _retry_after(raw: str | None) -> timedelta | None:
    """``Retry-After`` in seconds or as an HTTP date, within 0 and ``MAX_RETRY_AFTER``."""
    if raw is None:
        return None
    text = raw.strip()
    if text.isascii() and text.isdigit():
        return min(timedelta(seconds=min(int(text), 10**9)), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(when - datetime.now(UTC), timedelta(0)), MAX_RETRY_AFTER)
