"""Every SQL block in docs/operations.md runs against a real schema, and pruning works."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from squidmesh_backends.postgres import PostgresRunStore
from squidmesh_core.decide import decide
from squidmesh_core.events import CancelRequested
from squidmesh_core.testing.contracts.run_store import FLOW, committed, new_run, run_id
from tests.postgres.sql import execute

pytestmark = pytest.mark.postgres

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
SQL = re.findall(r"```sql\n(.*?)```", DOC.read_text(), re.DOTALL)


def test_the_page_has_sql() -> None:
    assert len(SQL) >= 4
    assert any(block.lstrip().startswith("DELETE") for block in SQL)


@pytest.mark.parametrize("block", SQL, ids=[f"sql{i}" for i in range(len(SQL))])
async def test_documented_sql_runs(pg_store: PostgresRunStore, block: str) -> None:
    await committed(pg_store, new_run(1))
    for statement in filter(str.strip, block.split(";")):
        await execute(pg_store, statement.replace("squidmesh.", f'"{pg_store.schema}".'))


async def test_the_documented_prune_removes_old_finished_runs_only(
    pg_store: PostgresRunStore,
) -> None:
    old = datetime.now(UTC) - timedelta(days=40)
    finished = await committed(pg_store, new_run(1, at=old))
    await committed(pg_store, decide(FLOW, finished, CancelRequested(), now=old).unwrap())
    await committed(pg_store, new_run(2, at=old))  # old but still active
    recent = await committed(pg_store, new_run(3, at=datetime.now(UTC)))
    await committed(
        pg_store, decide(FLOW, recent, CancelRequested(), now=recent.created_at).unwrap()
    )
    newest_cron = await committed(
        pg_store, new_run(4, at=old, key="cron:nightly:2026-01-02T00:00:00Z")
    )
    await committed(pg_store, decide(FLOW, newest_cron, CancelRequested(), now=old).unwrap())
    older_cron = await committed(
        pg_store, new_run(5, at=old, key="cron:nightly:2026-01-01T00:00:00Z")
    )
    await committed(pg_store, decide(FLOW, older_cron, CancelRequested(), now=old).unwrap())
    prune = next(block for block in SQL if block.lstrip().startswith("DELETE"))
    await execute(pg_store, prune.replace("squidmesh.", f'"{pg_store.schema}".'))
    assert await pg_store.load(run_id(1)) is None
    assert await pg_store.load(run_id(2)) is not None
    assert await pg_store.load(run_id(3)) is not None
    assert await pg_store.load(run_id(4)) is not None, "the newest cron run of a trigger stays"
    assert await pg_store.load(run_id(5)) is None
    leftovers = await execute(
        pg_store,
        f'SELECT count(*) FROM "{pg_store.schema}".squidmesh_step_runs WHERE run_id = %s',
        (run_id(1),),
    )
    assert leftovers == [(0,)]
