"""Id sources: random UUIDs and tokens in production, predictable ones in tests."""

from __future__ import annotations

import secrets
import uuid

from squidmesh_core.ids import LeaseToken, RunId


class RandomIds:
    """UUID4 run ids and 128-bit random lease tokens."""

    def new_run_id(self) -> RunId:
        return RunId(str(uuid.uuid4()))

    def new_lease_token(self) -> LeaseToken:
        return LeaseToken(secrets.token_hex(16))


class SequenceIds:
    """Predictable ids: run ``n`` is ``00000000-0000-4000-8000-<n>``; tokens are ``lease-<n>``."""

    def __init__(self) -> None:
        self._runs = 0
        self._tokens = 0

    def new_run_id(self) -> RunId:
        self._runs += 1
        return RunId(f"00000000-0000-4000-8000-{self._runs:012d}")

    def new_lease_token(self) -> LeaseToken:
        self._tokens += 1
        return LeaseToken(f"lease-{self._tokens}")
