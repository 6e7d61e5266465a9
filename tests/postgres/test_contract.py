from __future__ import annotations

import pytest

from squidmesh_backends.postgres import PostgresRunStore
from squidmesh_core.testing.contracts import RunStoreContract

pytestmark = pytest.mark.postgres


@pytest.fixture
def run_store(pg_store: PostgresRunStore) -> PostgresRunStore:
    return pg_store


class TestPostgresRunStore(RunStoreContract):
    pass
