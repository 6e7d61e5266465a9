"""Settings shared by every test directory: Hypothesis profiles and a clean environment."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=60, deadline=None)
settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile(
    os.environ.get("SQUIDMESH_HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev")
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees SQUIDMESH_* settings from the developer's shell."""
    for name in list(os.environ):
        if name.startswith("SQUIDMESH_") and not name.startswith("SQUIDMESH_TEST_"):
            monkeypatch.delenv(name)
