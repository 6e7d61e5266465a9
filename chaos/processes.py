"""Worker processes an experiment starts, kills and stops: ``squidmesh worker --app APP``."""

from __future__ import annotations

import os
import queue as queues
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class WorkerFailedError(AssertionError):
    """A worker did not start, or did not stop when asked."""


class WorkerProcess:
    """``squidmesh worker --app APP`` in a child process, its output collected."""

    def __init__(self, app: str, env: dict[str, str]) -> None:
        self.app = app
        self.lines: queues.Queue[str] = queues.Queue()
        self.output: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "squidmesh_backends.cli.main", "worker", "--app", app],
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
        raise WorkerFailedError(f"worker {self.pid} did not start:\n{''.join(self.output)}")

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM, then wait; the exit code (fails if the worker hangs)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise WorkerFailedError(
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
