"""A host application for the CLI tests: one workflow on the embedded store."""

from __future__ import annotations

import os
from datetime import timedelta

from pydantic import BaseModel

from squidmesh_backends.runtime import RuntimeSettings, compose
from squidmesh_core import COMPLETE, StepContext, chain, manual, step, wait, workflow


class Greeting(BaseModel):
    name: str


async def greet(data: Greeting, ctx: StepContext) -> dict[str, str]:
    return {"greeting": f"hello {data.name}"}


hello = workflow(
    "demo.hello",
    triggers=[manual("greet", payload=Greeting)],
    steps=[step("greet", greet), wait("linger", timedelta(milliseconds=50))],
    transitions=chain("greet", "linger", COMPLETE),
)

SETTINGS = RuntimeSettings(poll_interval=timedelta(milliseconds=50))


def make_runtime() -> object:
    store = os.environ.get("SQUIDMESH_TEST_CLI_STORE", "memory")
    return compose(workflows=[hello], store=store, settings=SETTINGS)


runtime = make_runtime()
