"""The CLI against the machine's PostgreSQL: migrate, smoke and run commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.harness import squidmesh, start_and_wait, worker

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

APP = "tests.postgres.cli_app:runtime"


def test_migrate_applies_once_and_then_has_nothing_to_do(pg_dsn: str, fresh_schema: str) -> None:
    first = squidmesh("migrate", "--dsn", pg_dsn, "--schema", fresh_schema)
    assert first.returncode == 0, first.stderr
    assert f"schema {fresh_schema}: applied migration(s) 1" in first.stdout
    again = squidmesh("migrate", "--schema", fresh_schema, env={"SQUIDMESH_DSN": pg_dsn})
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stdout


def test_migrate_reports_bad_input_clearly(pg_dsn: str) -> None:
    missing = squidmesh("migrate", env={"SQUIDMESH_DSN": ""})
    assert missing.returncode == 2
    assert "--dsn" in missing.stderr
    bad_schema = squidmesh("migrate", "--dsn", pg_dsn, "--schema", "Robert'); DROP")
    assert bad_schema.returncode == 2
    assert "invalid PostgreSQL schema name" in bad_schema.stderr
    unreachable = squidmesh(
        "migrate", "--dsn", "postgresql://postgres@127.0.0.1:1/x", "--wait", "0.5"
    )
    assert unreachable.returncode == 2
    assert "PostgreSQL unavailable" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr


def test_smoke_runs_on_postgres(pg_dsn: str, fresh_schema: str, tmp_path: Path) -> None:
    result = squidmesh("smoke", "--store", f"{pg_dsn}?schema={fresh_schema}", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"migrated schema {fresh_schema}" in result.stdout
    assert result.stdout.rstrip().endswith("smoke: all checks passed")


def test_run_commands_against_an_unmigrated_schema_name_the_fix(
    pg_dsn: str, fresh_schema: str
) -> None:
    env = {"SQUIDMESH_TEST_APP_STORE": f"{pg_dsn}?schema={fresh_schema}"}
    result = squidmesh("run", "list", "--app", APP, env=env)
    assert result.returncode == 2
    assert f"squidmesh migrate --dsn <DSN> --schema {fresh_schema}" in result.stderr


def test_run_commands_work_on_postgres(pg_dsn: str, pg_schema: str) -> None:
    env = {"SQUIDMESH_TEST_APP_STORE": f"{pg_dsn}?schema={pg_schema}"}
    with worker(app=APP, env=env):
        started = start_and_wait("demo.hello", '{"name": "ada"}', env=env, app=APP)
    assert started.returncode == 0, started.stdout + started.stderr
    run = json.loads(started.stdout)
    assert run["status"] == "completed"
    listed = squidmesh("run", "list", "--app", APP, "--json", env=env)
    assert [r["id"] for r in json.loads(listed.stdout)] == [run["id"]]
    shown = squidmesh("run", "show", "--app", APP, run["id"], env=env)
    assert shown.returncode == 0 and "greet" in shown.stdout
