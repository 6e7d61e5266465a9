"""The HTTP tool against a real loopback server, plus exact edge cases on a mock transport."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from returns.result import Failure, Result, Success

from squidmesh_backends.tools import HttpTool, ToolError, ToolErrorKind, ToolResult, invoke
from squidmesh_core import RunId, StepContext
from squidmesh_core.jsonvalue import check_json, storable_text_problem
from tests.tools.loopback import LoopbackServer

CTX = StepContext(
    run_id=RunId("00000000-0000-4000-8000-000000000001"),
    workflow="w",
    step="charge",
    attempt=2,
    idempotency_key="squidmesh:00000000-0000-4000-8000-000000000001:charge",
    started_at=datetime(2026, 1, 1, tzinfo=UTC),
)


@pytest.fixture
async def server() -> AsyncIterator[LoopbackServer]:
    async with LoopbackServer() as running:
        yield running


@pytest.fixture
async def tool() -> AsyncIterator[HttpTool]:
    async with HttpTool(name="gateway", idempotency_header="Idempotency-Key") as made:
        yield made


def error_of(result: Result[ToolResult, ToolError]) -> ToolError:
    assert isinstance(result, Failure), result
    error = result.failure()
    assert isinstance(error, ToolError)
    return error


async def test_a_2xx_answer_is_a_result_with_decoded_json(
    server: LoopbackServer, tool: HttpTool
) -> None:
    result = await invoke(
        tool,
        {"method": "post", "url": f"{server.url}/echo", "params": {"q": 1}, "json": {"a": [1]}},
        context=CTX,
    )
    value = result.unwrap().value
    assert value["status"] == 200
    assert value["method"] == "POST" and value["url"] == f"{server.url}/echo"  # like errors
    body = value["body"]
    assert isinstance(body, dict)
    assert body["method"] == "POST"
    assert body["query"] == {"q": "1"}
    assert body["body"] == '{"a":[1]}'
    assert dict(body["headers"])["idempotency-key"] == CTX.idempotency_key
    assert dict(value["headers"])["content-type"] == "application/json"  # type: ignore[arg-type]


async def test_text_bodies_and_redirects_are_results(
    server: LoopbackServer, tool: HttpTool
) -> None:
    text = (await invoke(tool, {"method": "GET", "url": f"{server.url}/text"})).unwrap()
    assert text.value["body"] == "h\u00e9llo"
    moved = (await invoke(tool, {"method": "GET", "url": f"{server.url}/redirect"})).unwrap()
    assert moved.value["status"] == 302  # never followed
    assert dict(moved.value["headers"])["location"] == "/echo"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "retryable"),
    [
        (400, False),
        (404, False),
        (409, False),
        (408, True),
        (425, True),
        (429, True),
        (500, True),
        (503, True),
    ],
)
async def test_error_statuses_map_to_http_errors(
    server: LoopbackServer, tool: HttpTool, code: int, retryable: bool
) -> None:
    error = error_of(await invoke(tool, {"method": "GET", "url": f"{server.url}/status/{code}"}))
    assert error.kind is ToolErrorKind.HTTP
    assert error.retryable is retryable
    assert error.message == f"gateway answered {code}"
    assert error.details["status"] == code
    failure = error.to_failure()
    assert (failure.kind, failure.retryable) == ("http", retryable)
    assert failure.details["tool"] == "gateway"


async def test_retry_after_seconds_are_honoured(server: LoopbackServer, tool: HttpTool) -> None:
    url = f"{server.url}/status/429?retry_after=7"
    error = error_of(await invoke(tool, {"method": "GET", "url": url}))
    assert error.retry_after == timedelta(seconds=7)
    assert error.to_failure().retry_after == timedelta(seconds=7)


async def test_a_slow_answer_is_a_timeout(server: LoopbackServer, tool: HttpTool) -> None:
    url = f"{server.url}/slow?delay=2"
    error = error_of(await invoke(tool, {"method": "GET", "url": url, "timeout": 0.2}))
    assert (error.kind, error.retryable) == (ToolErrorKind.TIMEOUT, True)


async def test_a_reset_connection_is_a_transport_error(
    server: LoopbackServer, tool: HttpTool
) -> None:
    error = error_of(await invoke(tool, {"method": "GET", "url": f"{server.url}/reset"}))
    assert (error.kind, error.retryable) == (ToolErrorKind.TRANSPORT, True)


async def test_a_refused_connection_is_a_transport_error(tool: HttpTool) -> None:
    error = error_of(await invoke(tool, {"method": "GET", "url": "http://127.0.0.1:9/x"}))
    assert error.kind is ToolErrorKind.TRANSPORT


async def test_a_malformed_json_body_is_an_invalid_response(
    server: LoopbackServer, tool: HttpTool
) -> None:
    error = error_of(await invoke(tool, {"method": "GET", "url": f"{server.url}/malformed"}))
    assert (error.kind, error.retryable) == (ToolErrorKind.INVALID_RESPONSE, False)


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        ("GET /", "must be a mapping"),
        ({"method": "BREW", "url": "http://x"}, "method must be one of"),
        ({"method": "GET", "url": "ftp://x/y"}, "absolute http"),
        ({"method": "GET", "url": "/relative"}, "absolute http"),
        ({"method": "GET", "url": "http://x/\r\nInjected: 1"}, "control characters"),
        ({"method": "GET", "url": "http://x", "headers": {"A": "b\r\nc: d"}}, "headers"),
        ({"method": "GET", "url": "http://x", "params": {"a": [1]}}, "params"),
        ({"method": "POST", "url": "http://x", "json": {}, "body": "x"}, "either json or body"),
        ({"method": "POST", "url": "http://x", "json": {"n": float("nan")}}, "json"),
        ({"method": "GET", "url": "http://x", "timeout": 0}, "timeout"),
        ({"method": "GET", "url": "http://x", "timeout": 10_000}, "timeout"),
        ({"method": "GET", "url": "http://x", "retries": 3}, "unknown request fields: retries"),
    ],
)
async def test_bad_requests_are_refused_before_any_io(
    server: LoopbackServer, tool: HttpTool, request_: object, reason: str
) -> None:
    error = error_of(await invoke(tool, request_))
    assert error.kind is ToolErrorKind.INVALID_REQUEST
    assert reason in error.message
    assert error.retryable is False
    assert server.hits == 0


def mock_tool(handler: httpx.MockTransport) -> HttpTool:
    return HttpTool(name="mock", client=httpx.AsyncClient(transport=handler))


async def test_retry_after_as_an_http_date() -> None:
    later = datetime.now(UTC) + timedelta(seconds=90)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, headers={"Retry-After": format_datetime(later, usegmt=True)})

    error = error_of(
        await invoke(mock_tool(httpx.MockTransport(handler)), {"method": "GET", "url": "http://m/"})
    )
    assert error.retry_after is not None
    assert timedelta(seconds=80) < error.retry_after <= timedelta(seconds=90)


@pytest.mark.parametrize(
    ("raised", "kind"),
    [
        (httpx.ConnectTimeout("slow"), ToolErrorKind.TIMEOUT),
        (httpx.ReadTimeout("slow"), ToolErrorKind.TIMEOUT),
        (httpx.ConnectError("refused"), ToolErrorKind.TRANSPORT),
        (httpx.RemoteProtocolError("bad"), ToolErrorKind.TRANSPORT),
    ],
)
async def test_transport_exceptions_map_to_kinds(raised: Exception, kind: ToolErrorKind) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise raised

    error = error_of(
        await invoke(mock_tool(httpx.MockTransport(handler)), {"method": "GET", "url": "http://m/"})
    )
    assert (error.kind, error.retryable) == (kind, True)


async def test_no_hidden_retries() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(503)

    await invoke(mock_tool(httpx.MockTransport(handler)), {"method": "GET", "url": "http://m/"})
    assert len(calls) == 1


class Raising:
    name = "raising"

    async def call(
        self, request: object, context: StepContext | None
    ) -> Result[ToolResult, ToolError]:
        raise RuntimeError("boom")


class WrongShape:
    name = "wrong"

    async def call(
        self, request: object, context: StepContext | None
    ) -> Result[ToolResult, ToolError]:
        return {"status": 200}  # type: ignore[return-value]


class Unstorable:
    name = "unstorable"

    async def call(
        self, request: object, context: StepContext | None
    ) -> Result[ToolResult, ToolError]:
        return Success(ToolResult(tool="unstorable", value={"n": float("nan")}))


@pytest.mark.parametrize("bad", [Raising(), WrongShape(), Unstorable()])
async def test_misbehaving_tools_become_adapter_contract_errors(bad: object) -> None:
    error = error_of(await invoke(bad, {}))  # type: ignore[arg-type]
    assert (error.kind, error.retryable) == (ToolErrorKind.ADAPTER_CONTRACT, False)
    assert error.code == "tool_adapter_contract"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("99999999999999", timedelta(days=1)),
        ("\u00b2", None),
        ("-5", None),
        ("soon", None),
        ("Wed, 21 Oct 2099 07:28:00 GMT", timedelta(days=1)),
        ("0", timedelta(0)),
    ],
)
async def test_odd_retry_after_values_never_escape(header: str, expected: timedelta | None) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, headers=[(b"Retry-After", header.encode("latin-1"))])

    tool = mock_tool(httpx.MockTransport(handler))
    error = error_of(await invoke(tool, {"method": "GET", "url": "http://m/"}))
    assert (error.kind, error.retryable, error.retry_after) == (ToolErrorKind.HTTP, True, expected)


async def test_deeply_nested_json_is_an_invalid_response() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            content=b"[" * 200_000 + b"]" * 200_000,
            headers={"Content-Type": "application/json"},
        )

    error = error_of(
        await invoke(mock_tool(httpx.MockTransport(handler)), {"method": "GET", "url": "http://m/"})
    )
    assert error.kind is ToolErrorKind.INVALID_RESPONSE


async def test_oversized_and_decompression_bomb_answers_are_cut_off() -> None:
    import gzip

    bomb = gzip.compress(b"0" * (20 * 1024 * 1024))

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/bomb":
            return httpx.Response(200, content=bomb, headers={"Content-Encoding": "gzip"})
        return httpx.Response(500, content=b"x" * (5 * 1024 * 1024))

    tool = mock_tool(httpx.MockTransport(handler))
    error = error_of(await invoke(tool, {"method": "GET", "url": "http://m/bomb"}))
    assert error.kind is ToolErrorKind.INVALID_RESPONSE
    big_error = error_of(await invoke(tool, {"method": "GET", "url": "http://m/big"}))
    assert big_error.kind is ToolErrorKind.HTTP
    assert len(str(big_error.details["body"])) == 2000


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Name": "caf\u00e9"},
        {"Bad Name": "x"},
        {"Bad:Name": "x"},
        {"X": "a\x01b"},
        {"X": "a\x7fb"},
    ],
)
async def test_headers_that_http_cannot_carry_are_refused_before_any_io(
    server: LoopbackServer, tool: HttpTool, headers: dict[str, str]
) -> None:
    error = error_of(
        await invoke(tool, {"method": "GET", "url": f"{server.url}/echo", "headers": headers})
    )
    assert (error.kind, error.retryable) == (ToolErrorKind.INVALID_REQUEST, False)
    assert server.hits == 0


async def test_error_details_hide_credentials_and_queries() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, content=b"bad\x00gateway\xff")

    tool = mock_tool(httpx.MockTransport(handler))
    url = "https://user:secret@pay.example/charge?token=abc"
    error = error_of(await invoke(tool, {"method": "GET", "url": url}))
    assert error.details["url"] == "https://pay.example/charge"
    assert "\x00" not in str(error.details["body"])
    failure = error.to_failure()
    assert failure.details["status"] == 502


@pytest.mark.parametrize("charset", ["utf-7", "unicode_escape"])
async def test_bodies_that_decode_to_lone_surrogates_are_made_storable(charset: str) -> None:
    content = b"+2AA-" if charset == "utf-7" else b"a\\ud800b"

    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"content-type": f"text/plain; charset={charset}"}
        if request.url.path == "/fail":
            return httpx.Response(503, content=content, headers=headers)
        return httpx.Response(200, content=content, headers=headers)

    tool = mock_tool(httpx.MockTransport(handler))
    body = (await invoke(tool, {"method": "GET", "url": "https://x.example/ok"})).unwrap()
    text = body.value["body"]
    assert isinstance(text, str)
    assert "\ufffd" in text
    assert storable_text_problem(text) is None
    error = error_of(await invoke(tool, {"method": "GET", "url": "https://x.example/fail"}))
    assert storable_text_problem(str(error.details["body"])) is None
    assert isinstance(check_json(dict(error.details)), Success)  # status, url etc. are kept
