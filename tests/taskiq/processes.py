"""Worker processes and a test-owned redis-server, for the multi-process tests."""

from __future__ import annotations

import os
import queue as queues
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.services import free_port

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.taskiq.worker_app:runtime"


class WorkerProcess:
    """``squidmesh worker --app tests.taskiq.worker_app:runtime`` in a child process."""

    def __init__(self, env: dict[str, str]) -> None:
        self.lines: queues.Queue[str] = queues.Queue()
        self.output: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "squidmesh_backends.cli.main", "worker", "--app", APP],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._pumped = threading.Thread(target=self._pump, daemon=True)
        self._pumped.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queues.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if "squidmesh worker ready" in line:
                return
        raise AssertionError(f"worker {self.pid} did not start:\n{''.join(self.output)}")

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM, then wait; the exit code (fails if the worker hangs)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"worker {self.pid} ignored SIGTERM:\n{''.join(self.output)}"
            ) from None
        finally:
            self._close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._close()

    def _close(self) -> None:
        if self.proc.stdout is not None and self.proc.poll() is not None:
            self._pumped.join(timeout=5)
            self.proc.stdout.close()


class OwnRedis:
    """A redis-server on its own port and directory, which the test may stop and flush."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            reason = "redis-server not found: cannot start a test-owned Redis"
            if os.environ.get("CI"):
                pytest.fail(reason)
            pytest.skip(reason)
        self.binary = binary
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="squidmesh-redis-")
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("test-owned redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
