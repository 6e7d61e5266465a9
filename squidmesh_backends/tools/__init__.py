"""Tools steps call: the ``invoke`` boundary and the httpx HTTP adapter."""

from squidmesh_backends.tools.base import Tool, ToolError, ToolErrorKind, ToolResult, invoke
from squidmesh_backends.tools.http import HttpRequest, HttpTool, parse_request

__all__ = [
    "HttpRequest",
    "HttpTool",
    "Tool",
    "ToolError",
    "ToolErrorKind",
    "ToolResult",
    "invoke",
    "parse_request",
]
