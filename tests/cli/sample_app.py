"""The CLI tests' host application: the shipped hello example, on a store chosen per test.

``SQUIDMESH_TEST_CLI_STORE`` (default ``memory``), ``SQUIDMESH_TEST_CLI_BROKER``
(none: steps run in the worker process), ``SQUIDMESH_TEST_CLI_NAMESPACE`` and
``SQUIDMESH_TEST_CLI_WORKFLOWS`` (comma-separated names: register only these).
"""

from __future__ import annotations

import os
from datetime import timedelta

from examples.hello_app import hello
from squidmesh_backends.examples.order_approval import ORDER_APPROVAL
from squidmesh_backends.runtime import Runtime, RuntimeSettings, compose
from squidmesh_core import COMPLETE, StepContext, chain, manual, step, workflow

SETTINGS = RuntimeSettings(poll_interval=timedelta(milliseconds=50))
FORGED = "\x1b[2J\x1b[31mFORGED\r\nrun 00000000 status completed [bold]markup[/bold]"
"""What a hostile step raises: it must reach the terminal as inert text."""


async def explode(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    raise RuntimeError(FORGED)


hostile = workflow(
    "demo.hostile",
    triggers=[manual("go")],
    steps=[step("explode", explode)],
    transitions=chain("explode", COMPLETE),
)


def make_runtime() -> Runtime:
    only = os.environ.get("SQUIDMESH_TEST_CLI_WORKFLOWS")
    every = (hello, ORDER_APPROVAL, hostile)
    chosen = [w for w in every if only is None or w.name in only.split(",")]
    return compose(
        workflows=chosen,
        store=os.environ.get("SQUIDMESH_TEST_CLI_STORE", "memory"),
        broker=os.environ.get("SQUIDMESH_TEST_CLI_BROKER") or None,
        namespace=os.environ.get("SQUIDMESH_TEST_CLI_NAMESPACE") or None,
        settings=SETTINGS,
    )


async def async_factory() -> Runtime:  # a mistake the CLI names
    return make_runtime()


def needs_arguments(store: str) -> Runtime:  # a mistake the CLI names
    return make_runtime()


runtime = make_runtime()
