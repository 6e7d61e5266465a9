"""The small fault suite, on every change: ``python -m chaos --size small`` must pass.

It starts its own PostgreSQL cluster and Redis (never the shared ones), so it
needs ``initdb``/``pg_ctl`` and ``redis-server`` installed; without them it
skips locally and fails under CI.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[1]


def test_the_small_fault_suite_passes() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "chaos", "--size", "small"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    print(done.stdout)
    if done.returncode == 2:  # a server binary is missing
        if os.environ.get("CI"):
            pytest.fail(done.stderr)
        pytest.skip(done.stderr.strip())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all passed" in done.stdout
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "yes" in line]
    assert len(rows) == 8  # every experiment ran and passed
