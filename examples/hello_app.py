"""A minimal host application: one workflow on the embedded SQLite store.

Used by the CLI examples in docs/getting_started.md::

    squidmesh run start --app examples.hello_app:runtime demo.hello '{"name": "ada"}' --wait
"""

from __future__ import annotations

import os
from datetime import timedelta

from pydantic import BaseModel

from squidmesh_backends import RuntimeSettings, compose
from squidmesh_core import COMPLETE, StepContext, chain, cron, manual, step, wait, workflow


class Greeting(BaseModel):
    name: str


async def greet(data: Greeting, ctx: StepContext) -> dict[str, str]:
    return {"greeting": f"hello {data.name}"}


hello = workflow(
    "demo.hello",
    triggers=[manual("greet", payload=Greeting)],
    steps=[step("greet", greet), wait("linger", timedelta(milliseconds=100))],
    transitions=chain("greet", "linger", COMPLETE),
)

runtime = compose(
    workflows=[hello],
    store="sqlite:" + os.environ.get("SQUIDMESH_EXAMPLE_DB", "squidmesh-example.db"),
    settings=RuntimeSettings(poll_interval=timedelta(milliseconds=100)),
)


class Digest(BaseModel):
    audience: str = "team"


async def send_digest(data: Digest, ctx: StepContext) -> dict[str, object]:
    tick = None if ctx.schedule is None else ctx.schedule["tick"]
    return {"sent_to": data.audience, "for_tick": tick}


digest = workflow(
    "demo.digest",
    triggers=[cron("weekday_mornings", "30 8 * * 1-5", timezone="Europe/Riga", payload=Digest)],
    steps=[step("send", send_digest)],
    transitions=chain("send", COMPLETE),
)

scheduled_runtime = compose(
    workflows=[hello, digest],
    store="sqlite:" + os.environ.get("SQUIDMESH_EXAMPLE_DB", "squidmesh-example.db"),
    settings=RuntimeSettings(poll_interval=timedelta(milliseconds=100)),
    cron=[digest],
)
