"""``status``, ``doctor``, ``prune`` and bulk actions: the real command against PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from squidmesh_backends.postgres import PostgresRunStore, migrate
from tests.cli.harness import APP, squidmesh, start_and_wait, worker
from tests.services import drop_schema, migrated_schema, new_schema_name, require_postgres

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
def pg() -> Iterator[tuple[str, str, dict[str, str]]]:
    dsn = require_postgres()
    schema = asyncio.run(migrated_schema(dsn))
    try:
        yield dsn, schema, {"SQUIDMESH_TEST_CLI_STORE": f"{dsn}?schema={schema}"}
    finally:
        drop_schema(dsn, schema)


def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    done = squidmesh(*args, env=env)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout, done.stderr


def start(env: dict[str, str], name: str) -> str:
    code, out, err = run_cli(
        "run", "start", "--app", APP, "demo.hello", json.dumps({"name": name}), "--json", env=env
    )
    assert code == 0, err
    run_id: str = json.loads(out)["id"]
    return run_id


def checks(out: str) -> list[str]:
    return sorted({p["check"] for p in json.loads(out)["problems"]})


def test_status_and_doctor_see_the_queue_workers_and_expired_leases(
    pg: tuple[str, str, dict[str, str]],
) -> None:
    dsn, schema, env = pg
    ids = [start(env, f"n{n}") for n in range(3)]
    code, out, _ = run_cli("status", "--app", APP, "--json", env=env)
    assert code == 0
    snapshot = json.loads(out)
    assert snapshot["runs"] == [{"workflow": "demo.hello", "status": "pending", "count": 3}]
    assert snapshot["due_jobs"] == 3 and snapshot["workers"] == []
    assert snapshot["schema_version"] == snapshot["schema_expected"]
    time.sleep(1.2)
    code, out, _ = run_cli("doctor", "--app", APP, "--overdue", "1s", "--json", env=env)
    assert code == 3
    assert checks(out) == ["no_workers", "overdue_jobs"]
    code, text, _ = run_cli("status", "--app", APP, env=env)
    assert "jobs due now: 3; the oldest due" in text and "demo.hello" in text

    # A worker that claimed a job and died: its lease expires, nobody reclaims it yet.
    async def ghost_claim() -> None:
        store = PostgresRunStore(dsn, schema=schema)
        try:
            await store.claim_due(
                now=datetime.now(UTC),
                limit=1,
                lease_for=timedelta(milliseconds=10),
                owner="ghost:1",
                mint=lambda: "0" * 32,  # type: ignore[arg-type,return-value]
            )
        finally:
            await store.close()

    asyncio.run(ghost_claim())
    code, out, _ = run_cli("doctor", "--app", APP, "--overdue", "1h", "--json", env=env)
    assert "expired_lease" not in checks(out)  # just ended: the next claim takes it
    time.sleep(0.3)
    code, out, _ = run_cli("doctor", "--app", APP, "--overdue", "0.2s", "--json", env=env)
    assert code == 3
    found = json.loads(out)["problems"]
    assert "expired_lease" in checks(out)
    assert any("ghost:1" in p["message"] for p in found)

    with worker(env=env) as running:
        for run_id in ids:
            code, out, _ = run_cli("run", "show", "--app", APP, run_id, "--json", env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            listed = json.loads(run_cli("run", "list", "--app", APP, "--json", env=env)[1])
            if all(r["status"] == "completed" for r in listed):
                break
            time.sleep(0.2)
        code, out, _ = run_cli("status", "--app", APP, "--json", env=env)
        workers = json.loads(out)["workers"]
        assert [w["name"].rsplit(":", 1)[1] for w in workers] == [str(running.process.pid)]
        assert workers[0]["stopped_at"] is None
        code, out, _ = run_cli("doctor", "--app", APP, "--json", env=env)
    assert (code, json.loads(out)) == (0, {"ok": True, "problems": [], "notes": []})
    code, out, _ = run_cli("status", "--app", APP, "--json", env=env)
    assert json.loads(out)["workers"][0]["stopped_at"] is not None


def test_doctor_reports_schema_drift(pg: tuple[str, str, dict[str, str]]) -> None:
    dsn, _, _ = pg
    behind = new_schema_name()
    asyncio.run(migrate(dsn, schema=behind, up_to=7))
    try:
        env = {"SQUIDMESH_TEST_CLI_STORE": f"{dsn}?schema={behind}"}
        code, out, _ = run_cli("doctor", "--app", APP, "--json", env=env)
        assert code == 3 and checks(out) == ["schema"]
        code, text, _ = run_cli("doctor", "--app", APP, env=env)
        assert code == 3 and "squidmesh migrate" in text
    finally:
        drop_schema(dsn, behind)


def test_bulk_cancel_and_replay_preview_then_act_with_an_audit(
    pg: tuple[str, str, dict[str, str]],
) -> None:
    _, _, env = pg
    ids = [start(env, f"b{n}") for n in range(4)]
    code, out, _ = run_cli("run", "cancel", "--app", APP, "--workflow", "demo.hello", env=env)
    assert code == 0 and "4 run(s) would be cancelled" in out and "--yes" in out
    assert all(i in out for i in ids)
    listed = json.loads(run_cli("run", "list", "--app", APP, "--json", env=env)[1])
    assert {r["status"] for r in listed} == {"pending"}

    who = ("--actor", "ops", "--note", "bad batch", "--idempotency-key", "b1")
    code, out, _ = run_cli(
        "run", "cancel", "--app", APP, "--status", "pending", "--yes", *who, env=env
    )
    assert code == 0 and "4 of 4 run(s) cancelled" in out
    shown = json.loads(run_cli("run", "show", "--app", APP, ids[0], "--json", env=env)[1])
    [entry] = shown["audit"]
    assert (entry["actor"], entry["note"], entry["idempotency_key"]) == (
        "ops",
        "bad batch",
        f"b1:{ids[0]}",
    )
    again = run_cli(
        "run", "cancel", "--app", APP, "--workflow", "demo.hello", "--yes", *who, env=env
    )
    assert again[0] == 0 and "4 of 4 run(s) cancelled" in again[1]  # the same receipts

    code, out, _ = run_cli(
        "run", "replay", "--app", APP, "--status", "cancelled", "--yes", "--json", env=env
    )
    assert code == 0
    report = json.loads(out)
    assert report["matched"] == 4 and report["refused"] == 0
    assert len({r["new_run"] for r in report["results"]}) == 4
    listed = json.loads(run_cli("run", "list", "--app", APP, "--json", env=env)[1])
    assert len(listed) == 8

    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    code, out, _ = run_cli(
        "run", "cancel", "--app", APP, "--created-after", future, "--json", env=env
    )
    assert json.loads(out) == {"matched": 0, "runs": [], "dry_run": True}
    code, _, err = run_cli("run", "cancel", "--app", APP, "--yes", env=env)
    assert code == 2 and "needs a run id or at least one filter" in err


def test_prune_previews_then_deletes_in_batches(pg: tuple[str, str, dict[str, str]]) -> None:
    dsn, schema, env = pg
    ids = [start(env, f"p{n}") for n in range(5)]
    run_cli("run", "cancel", "--app", APP, "--workflow", "demo.hello", "--yes", env=env)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f"UPDATE \"{schema}\".squidmesh_runs SET updated_at = now() - interval '40 days'"
            " WHERE id = ANY(%s)",
            (ids[:4],),
        )
    code, out, _ = run_cli("prune", "--app", APP, "--older-than", "30d", env=env)
    assert code == 0 and "4 run(s) completed,cancelled,failed older than 30d would be" in out
    assert "--yes" in out
    assert len(json.loads(run_cli("run", "list", "--app", APP, "--json", env=env)[1])) == 5

    code, out, err = run_cli(
        "prune", "--app", APP, "--older-than", "30d", "--batch-size", "3", "--yes", env=env
    )
    assert code == 0, err
    assert "deleted 4 run(s) in 2 batch(es)" in out
    assert "deleted 3/4" in err and "deleted 4/4" in err
    left = json.loads(run_cli("run", "list", "--app", APP, "--json", env=env)[1])
    assert [r["id"] for r in left] == [ids[4]]
    missing = run_cli("run", "show", "--app", APP, ids[0], env=env)
    assert missing[0] == 1 and "not_found" in missing[2]

    code, _, err = run_cli(
        "prune", "--app", APP, "--older-than", "1d", "--status", "running", env=env
    )
    assert code == 1 and "invalid_option" in err
    code, _, err = run_cli("prune", "--app", APP, "--older-than", "soon", env=env)
    assert code == 2 and "is not a duration" in err


def test_doctor_finds_a_run_parked_in_a_workflow_no_longer_registered(
    pg: tuple[str, str, dict[str, str]],
) -> None:
    _, _, env = pg
    order = json.dumps({"order_id": "o-9", "amount": 5})
    with worker(env=env):
        started = start_and_wait("examples.order_approval", order, env=env)
    code, out, err = started.returncode, started.stdout, started.stderr
    assert code == 0, err
    run_id = json.loads(out)["id"]
    assert run_cli("doctor", "--app", APP, "--json", env=env)[0] == 0  # it waits for a person
    without = {**env, "SQUIDMESH_TEST_CLI_WORKFLOWS": "demo.hello"}
    code, out, _ = run_cli("doctor", "--app", APP, "--json", env=without)
    assert code == 3 and checks(out) == ["stuck_run"]
    [problem] = json.loads(out)["problems"]
    assert problem["details"] == {
        "run_id": run_id,
        "workflow": "examples.order_approval",
        "reason": "paused_with_unavailable_workflow",
    }
