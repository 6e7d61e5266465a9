from __future__ import annotations

from datetime import timedelta

import pytest

from squidmesh_backends.errors import ConfigurationError
from squidmesh_backends.runtime import RuntimeSettings


def test_settings_come_from_the_environment() -> None:
    settings = RuntimeSettings.from_environ(
        {
            "SQUIDMESH_LEASE_SECONDS": "60",
            "SQUIDMESH_HEARTBEAT_SECONDS": "5",
            "SQUIDMESH_POLL_SECONDS": "0.5",
            "SQUIDMESH_SHUTDOWN_SECONDS": "20",
            "SQUIDMESH_CONCURRENCY": "4",
        }
    )
    assert settings.lease == timedelta(seconds=60)
    assert settings.heartbeat_every == timedelta(seconds=5)
    assert settings.poll_interval == timedelta(seconds=0.5)
    assert settings.shutdown_timeout == timedelta(seconds=20)
    assert settings.concurrency == 4


def test_missing_variables_keep_the_defaults() -> None:
    assert RuntimeSettings.from_environ({}) == RuntimeSettings()


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"SQUIDMESH_LEASE_SECONDS": "soon"}, "SQUIDMESH_LEASE_SECONDS must be a number"),
        ({"SQUIDMESH_CONCURRENCY": "many"}, "SQUIDMESH_CONCURRENCY must be an integer"),
        (
            {"SQUIDMESH_LEASE_SECONDS": "5", "SQUIDMESH_HEARTBEAT_SECONDS": "10"},
            "shorter than lease",
        ),
        ({"SQUIDMESH_POLL_SECONDS": "0"}, "poll_interval must be positive"),
        ({"SQUIDMESH_CONCURRENCY": "0"}, "must be >= 1"),
    ],
)
def test_bad_settings_are_configuration_errors(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        RuntimeSettings.from_environ(environ)
