"""A throwaway PostgreSQL cluster owned by one test: its own port and data directory.

Fault tests stop and restart it; the machine's shared server is never touched.
The cluster itself is ``chaos.servers.OwnPostgres`` (one source for the suite
and the fault experiments); a missing ``initdb`` skips, or fails under CI.
"""

from __future__ import annotations

import os

import pytest

from chaos.servers import MissingServerError, OwnPostgres


class ThrowawayCluster(OwnPostgres):
    """Not durable (fsync off): fast, and the tests never crash it expecting commits kept."""

    def __init__(self) -> None:
        try:
            super().__init__(durable=False)
        except MissingServerError as exc:
            if os.environ.get("CI"):
                pytest.fail(str(exc))
            pytest.skip(str(exc))
