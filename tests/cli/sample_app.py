"""The CLI tests' host application: the shipped hello example, on a store chosen per test."""

from __future__ import annotations

import os
from datetime import timedelta

from examples.hello_app import hello
from squidmesh_backends.examples.order_approval import ORDER_APPROVAL
from squidmesh_backends.runtime import Runtime, RuntimeSettings, compose

SETTINGS = RuntimeSettings(poll_interval=timedelta(milliseconds=50))


def make_runtime() -> Runtime:
    return compose(
        workflows=[hello, ORDER_APPROVAL],
        store=os.environ.get("SQUIDMESH_TEST_CLI_STORE", "memory"),
        settings=SETTINGS,
    )


runtime = make_runtime()
