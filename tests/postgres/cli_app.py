"""The hello example's workflow on the store named by SQUIDMESH_TEST_APP_STORE."""

from __future__ import annotations

import os
from datetime import timedelta

from examples.hello_app import hello
from squidmesh_backends.runtime import Runtime, RuntimeSettings, compose


def runtime() -> Runtime:
    return compose(
        workflows=[hello],
        store=os.environ["SQUIDMESH_TEST_APP_STORE"],
        settings=RuntimeSettings(poll_interval=timedelta(milliseconds=100)),
    )
