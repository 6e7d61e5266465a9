"""What a ``squidmesh worker`` tells its operator: the ready line, its logs, its name on attempts."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from tests.cli.harness import APP, squidmesh, start_and_wait, worker
from tests.services import drop_schema, migrated_schema, require_postgres

pytestmark = pytest.mark.slow


def run_hello(env: dict[str, str], payload: dict[str, object]) -> dict[str, object]:
    started = start_and_wait("demo.hello", json.dumps(payload), env=env)
    assert started.returncode == 0, started.stderr
    run: dict[str, object] = json.loads(started.stdout)
    return run


def test_json_logs_carry_the_run_and_info_shows_each_step(tmp_path: Path) -> None:
    env = {"SQUIDMESH_TEST_CLI_STORE": f"sqlite:{tmp_path}/logs.db"}
    with worker("--log-format", "json", env=env) as running:
        run = run_hello(env, {"name": "ada"})
    records = [json.loads(line) for line in running.logs.splitlines() if line.strip()]
    started = [r for r in records if r["message"].startswith("step.started greet#1")]
    finished = [r for r in records if r["message"].startswith("step.completed greet#1")]
    assert started and finished, running.logs[-3000:]
    for record in (started[0], finished[0]):
        assert record["level"] == "INFO"
        assert record["logger"] == "squidmesh.runtime"
        assert record["run_id"] == run["id"] and record["workflow"] == "demo.hello"
        assert record["step"] == "greet" and record["attempt"] == 1
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["ts"])


def test_text_logs_and_warning_level_keeps_step_logs_out(tmp_path: Path) -> None:
    env = {"SQUIDMESH_TEST_CLI_STORE": f"sqlite:{tmp_path}/text.db"}
    with worker(env=env) as chatty:
        run = run_hello(env, {"name": "bo"})
    line = next(x for x in chatty.err if "step.started greet#1" in x)
    assert re.match(r"\d{4}-\d\d-\d\dT[\d:.]+Z INFO squidmesh.runtime: step.started greet#1", line)
    assert f"run_id={run['id']}" in line and "workflow=demo.hello" in line
    assert "step=greet" in line and "attempt=1" in line
    with worker("--log-level", "warning", env=env) as quiet:
        run_hello(env, {"name": "cy"})
    assert "step.started" not in quiet.logs


def test_ready_line_names_store_broker_workflows_and_concurrency(tmp_path: Path) -> None:
    env = {"SQUIDMESH_TEST_CLI_STORE": f"sqlite:{tmp_path}/ready.db"}
    with worker("--concurrency", "3", env=env) as running:
        line = running.ready_line
    assert f"store SQLite {tmp_path}/ready.db" in line
    assert "broker none (steps run in this process)" in line
    assert "workflows demo.hello, demo.hostile, examples.order_approval" in line
    assert "cron none" in line and "concurrency 3 (InProcessExecutor)" in line


def test_ready_line_redacts_the_password_and_names_the_namespace() -> None:
    from tests.services import require_redis

    dsn, url = require_postgres(), require_redis()
    schema = asyncio.run(migrated_schema(dsn))
    secret_dsn = dsn.replace("postgres@", "postgres:hunter2@")
    env = {
        "SQUIDMESH_TEST_CLI_STORE": f"{secret_dsn}?schema={schema}",
        "SQUIDMESH_TEST_CLI_BROKER": url,
        "SQUIDMESH_TEST_CLI_NAMESPACE": f"ready-{schema}",
    }
    try:
        with worker(env=env) as running:
            line = running.ready_line
        assert "hunter2" not in line
        assert "postgres@127.0.0.1:5432/test" in line and f"schema {schema}" in line
        assert f"broker Redis at 127.0.0.1:6379/0 (stream squidmesh.ready-{schema})" in line
    finally:
        drop_schema(dsn, schema)


def test_run_show_prints_data_outputs_and_the_worker_of_each_attempt(tmp_path: Path) -> None:
    env = {"SQUIDMESH_TEST_CLI_STORE": f"sqlite:{tmp_path}/show.db"}
    long_name = "x" * 500
    with worker(env=env) as running:
        run = run_hello(env, {"name": long_name})
    shown = squidmesh("run", "show", "--app", APP, str(run["id"]), env=env)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert '  payload   {"name": "xxx' in out
    assert "more characters; --full shows all" in out
    assert '  outputs:\n    greet: {"greeting": "hello xxx' in out
    pid = running.process.pid
    assert re.search(rf"greet +1 .* succeeded +\S+:{pid}\b", out), out
    full = squidmesh("run", "show", "--app", APP, str(run["id"]), "--full", env=env).stdout
    assert long_name in full and "more characters" not in full
    as_json = json.loads(
        squidmesh("run", "show", "--app", APP, str(run["id"]), "--json", env=env).stdout
    )
    attempt = as_json["history"][0]["attempts"][0]
    assert attempt["worker"].endswith(f":{pid}")
