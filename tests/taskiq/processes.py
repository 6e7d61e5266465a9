"""Worker processes and a test-owned redis-server, for the multi-process tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chaos import processes, servers

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.taskiq.worker_app:runtime"


class WorkerProcess(processes.WorkerProcess):
    """``squidmesh worker --app tests.taskiq.worker_app:runtime`` in a child process."""

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__(APP, env)


class OwnRedis(servers.OwnRedis):
    """``chaos.servers.OwnRedis``; a missing ``redis-server`` skips, or fails under CI."""

    def __init__(self) -> None:
        try:
            super().__init__()
        except servers.MissingServerError as exc:
            if os.environ.get("CI"):
                pytest.fail(str(exc))
            pytest.skip(str(exc))
