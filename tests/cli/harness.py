"""Running the real ``squidmesh`` command in subprocesses: one-shot commands and workers."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.cli.sample_app:runtime"


def script() -> str:
    found = shutil.which("squidmesh", path=str(Path(sys.executable).parent))
    assert found is not None, "the console script is installed with the package"
    return found


def squidmesh(
    *args: str,
    cwd: Path = ROOT,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [script(), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        input=stdin,
        env={**os.environ, **(env or {})},
    )


def start_and_wait(
    workflow: str, payload: str, *, env: dict[str, str], app: str = APP
) -> subprocess.CompletedProcess[str]:
    """``squidmesh run start --app APP WORKFLOW PAYLOAD --wait --json`` (a worker runs it)."""
    return squidmesh("run", "start", "--app", app, workflow, payload, "--wait", "--json", env=env)


class Worker:
    """A running ``squidmesh worker``: its ready line, and everything it printed so far."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.ready_line = ""
        self.out: list[str] = []
        self.err: list[str] = []

    def drain(self, stream: IO[str], into: list[str]) -> None:
        for line in stream:
            into.append(line)

    @property
    def logs(self) -> str:
        return "".join(self.err)


@contextlib.contextmanager
def worker(
    *args: str, app: str = APP, env: dict[str, str] | None = None, ready_within: float = 30
) -> Iterator[Worker]:
    """A ``squidmesh worker`` process, yielded once it printed its ready line; stopped after."""
    process = subprocess.Popen(
        [script(), "worker", "--app", app, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    running = Worker(process)
    assert process.stdout is not None and process.stderr is not None
    threads = [
        threading.Thread(target=running.drain, args=(process.stdout, running.out), daemon=True),
        threading.Thread(target=running.drain, args=(process.stderr, running.err), daemon=True),
    ]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + ready_within
        while time.monotonic() < deadline and process.poll() is None:
            ready = [line for line in running.out if line.startswith("squidmesh worker ready")]
            if ready:
                running.ready_line = ready[0]
                break
            time.sleep(0.05)
        if not running.ready_line:
            raise AssertionError(
                f"the worker never got ready: {running.out} {running.logs[-3000:]}"
            )
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for thread in threads:
            thread.join(timeout=10)
        process.stdout.close()
        process.stderr.close()
