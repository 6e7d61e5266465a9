from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from squidmesh_backends.errors import MigrationRequiredError
from squidmesh_backends.sqlite import SqliteRunStore
from squidmesh_backends.sqlite import store as sqlite_store
from squidmesh_backends.sqlite._db import _us
from squidmesh_backends.sqlite._operations import _KEPT_CRON, _OLD_AND_IDLE, _doomed
from squidmesh_backends.sqlite.store import _MIGRATIONS, SCHEMA_VERSION
from squidmesh_core.codec import encode_run
from squidmesh_core.jsonvalue import dump_json
from squidmesh_core.state import RunStatus
from squidmesh_core.testing.contracts import RunStoreContract
from squidmesh_core.testing.contracts.operations import cancelled
from squidmesh_core.testing.contracts.run_store import T0, committed, new_run, run_id


@pytest.fixture
async def run_store(tmp_path: Path) -> AsyncIterator[SqliteRunStore]:
    async with SqliteRunStore(tmp_path / "runs.db") as store:
        yield store


class TestSqliteRunStore(RunStoreContract):
    pass


async def test_runs_survive_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "durable.db"
    async with SqliteRunStore(path) as store:
        state = await committed(store, new_run(1))
    async with SqliteRunStore(path) as reopened:
        assert await reopened.load(run_id(1)) == state
        assert await reopened.next_due_at() == state.jobs[0].due_at


async def test_two_stores_on_one_file_see_each_other(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    async with SqliteRunStore(path) as left, SqliteRunStore(path) as right:
        await committed(left, new_run(1))
        assert (await right.load(run_id(1))) is not None


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(MigrationRequiredError, match="schema version 99"):
        async with SqliteRunStore(path):
            pass


async def test_a_version_1_file_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    for statement in filter(str.strip, _MIGRATIONS[1].split(";")):
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    async with SqliteRunStore(path) as store:
        await committed(store, new_run(1))
    conn = sqlite3.connect(path)
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    indexes = {row[1] for row in conn.execute("PRAGMA index_list(squidmesh_jobs)")}
    conn.close()
    assert version == SCHEMA_VERSION == 3
    assert "squidmesh_jobs_leases" in indexes


async def test_a_version_2_file_is_migrated_with_its_runs_update_times(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: a file of version 2 holding five finished runs (bodies of run schema version 3)
    monkeypatch.setattr(sqlite_store, "_BACKFILL_CHUNK", 2)  # read in several chunks
    path = tmp_path / "v2.db"
    async with SqliteRunStore(tmp_path / "scratch.db") as scratch:
        states = [await cancelled(scratch, n, T0 + timedelta(seconds=n)) for n in range(1, 6)]
    conn = sqlite3.connect(path)
    for version in (1, 2):
        for statement in filter(str.strip, _MIGRATIONS[version].split(";")):
            conn.execute(statement)
    for state in states:
        body = encode_run(state)
        body["schema_version"] = 3
        conn.execute(
            "INSERT INTO squidmesh_runs (id, workflow, status, version, created_us, body)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (state.id, state.workflow, state.status.value, state.version, _us(T0), dump_json(body)),
        )
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    # when
    async with SqliteRunStore(path) as store:
        # then: they load, and pruning finds them by their last update
        assert await store.load(states[0].id) == states[0]
        assert (
            await store.operations_status(now=T0, expiring_within=timedelta(0), workers_since=T0)
        ).schema_version == 3
        counted = await store.count_prunable(
            finished_before=T0 + timedelta(seconds=3), statuses={RunStatus.CANCELLED}
        )
        assert (counted.matched, counted.kept_cron) == (2, 0)
        assert (
            await store.prune_runs(
                finished_before=T0 + timedelta(seconds=6),
                statuses={RunStatus.CANCELLED},
                limit=None,
                dry_run=False,
            )
            == 5
        )
    conn = sqlite3.connect(path)
    indexes = {row[1] for row in conn.execute("PRAGMA index_list(squidmesh_jobs)")}
    conn.close()
    assert "squidmesh_jobs_by_run" in indexes


def _plan(path: Path, sql: str, params: tuple[object, ...]) -> str:
    conn = sqlite3.connect(path)
    try:
        return " | ".join(str(row[3]) for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    finally:
        conn.close()


async def test_pruning_never_scans_the_jobs_or_runs_per_run(tmp_path: Path) -> None:
    # given: a store (its schema)
    path = tmp_path / "plan.db"
    async with SqliteRunStore(path) as store:
        await committed(store, new_run(1))
    doomed, params = _doomed(["cancelled", "completed"], 1, 500)
    counting = (
        f"SELECT count(*) FROM squidmesh_runs r WHERE r.status IN (?, ?)"
        f" AND {_OLD_AND_IDLE} AND {_KEPT_CRON}"
    )
    # then: each run is looked at through an index, its jobs and newer keys by one seek
    for plan in (
        _plan(path, f"DELETE FROM squidmesh_runs WHERE id IN ({doomed})", params),
        _plan(path, counting, ("cancelled", "completed", 1)),
    ):
        assert "SCAN j" not in plan and "SCAN n" not in plan and "SCAN r" not in plan, plan
        assert "SEARCH j USING COVERING INDEX squidmesh_jobs_by_run (run_id=?)" in plan
        assert "SEARCH n USING COVERING INDEX squidmesh_runs_idempotency" in plan
        assert "SEARCH r USING INDEX squidmesh_runs_by_status (status=?)" in plan
