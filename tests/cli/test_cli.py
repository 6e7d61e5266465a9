from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from squidmesh_backends.cli.main import END_MARK, START_MARK, main, render_tables_into
from squidmesh_core._table import markdown_tables
from tests.cli.harness import APP, ROOT, squidmesh, start_and_wait, worker

pytestmark = pytest.mark.slow


def test_smoke_runs_the_example_end_to_end(tmp_path: Path) -> None:
    result = squidmesh("smoke", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "status    completed" in out
    assert re.search(r"check_gateway +1 .*http: gateway answered 503", out)
    assert re.search(r"check_gateway +2 ", out)
    assert out.rstrip().endswith("smoke: all checks passed")


def test_smoke_verbose_prints_events_as_they_happen(tmp_path: Path) -> None:
    result = squidmesh("smoke", "--verbose", cwd=tmp_path)
    assert result.returncode == 0
    assert "event step.retry_scheduled check_gateway#2" in result.stdout
    assert "event run.transition {'from': 'running', 'to': 'completed'}" in result.stdout


def test_run_start_and_wait_watches_a_worker_run_it(tmp_path: Path) -> None:
    env = {"SQUIDMESH_TEST_CLI_STORE": f"sqlite:{tmp_path}/wait.db"}
    with worker(env=env):
        result = start_and_wait("demo.hello", '{"name": "ada"}', env=env)
        from_stdin = squidmesh(
            "run",
            "start",
            "--app",
            APP,
            "demo.hello",
            "-",
            "--wait",
            stdin='{"name": "bo"}',
            env=env,
        )
    assert result.returncode == 0, result.stderr
    run = json.loads(result.stdout)
    assert run["status"] == "completed"
    assert run["context"] == {"greeting": "hello ada"}
    assert [s["step"] for s in run["history"]] == ["greet", "linger"]
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert "status    completed" in from_stdin.stdout
    assert "greet" in from_stdin.stdout and "linger" in from_stdin.stdout


def test_invalid_payload_is_refused_with_its_code() -> None:
    result = squidmesh("run", "start", "--app", APP, "demo.hello", '{"nom": 1}')
    assert result.returncode == 1
    assert "error: invalid_payload" in result.stderr
    assert "missing fields: name" in result.stderr and "unknown fields: nom" in result.stderr


def test_malformed_json_payload_is_a_usage_error() -> None:
    result = squidmesh("run", "start", "--app", APP, "demo.hello", "{not json")
    assert result.returncode == 2
    assert "the payload is not valid JSON" in result.stderr


def test_unknown_workflow_and_runs() -> None:
    assert "error: unknown_workflow" in squidmesh("run", "start", "--app", APP, "nope", "{}").stderr
    missing = squidmesh("run", "show", "--app", APP, "00000000-0000-4000-8000-000000000042")
    assert missing.returncode == 1 and "error: not_found" in missing.stderr
    bad = squidmesh("run", "cancel", "--app", APP, "not-a-run-id")
    assert bad.returncode == 1 and "error: invalid_run_id" in bad.stderr


def test_refusals_are_sentences_and_json_gives_code_message_and_details() -> None:
    unknown = squidmesh("run", "start", "--app", APP, "nope", "{}")
    assert (
        unknown.stderr.strip() == "error: unknown_workflow: no workflow 'nope' is registered here"
    )
    listed = squidmesh("run", "list", "--app", APP, "--workflow", "nope", "--json")
    assert listed.returncode == 1  # a typo, not an empty list
    assert json.loads(listed.stdout) == {
        "error": {
            "code": "unknown_workflow",
            "message": "no workflow 'nope' is registered here",
            "details": {"workflow": "nope"},
        }
    }
    bad = squidmesh("run", "show", "--app", APP, "not-a-uuid", "--json")
    assert json.loads(bad.stdout)["error"]["details"] == {"value": "not-a-uuid"}


def test_version() -> None:
    shown = squidmesh("--version")
    assert shown.returncode == 0 and shown.stdout.startswith("squidmesh ")


def test_list_with_bad_status_is_a_usage_error_listing_the_choices() -> None:
    result = squidmesh("run", "list", "--app", APP, "--status", "asleep")
    assert result.returncode == 2
    assert "invalid choice: 'asleep'" in result.stderr and "completed" in result.stderr


def test_bad_app_spec_is_a_configuration_error() -> None:
    for spec in (
        "nomodule",
        "no.such.module:runtime",
        "tests.cli.sample_app:missing",
        "tests.cli.sample_app:SETTINGS",
    ):
        result = squidmesh("run", "list", "--app", spec)
        assert result.returncode == 2, spec
        assert result.stderr.startswith("error: ")


def test_graph_prints_mermaid() -> None:
    result = squidmesh("graph", "--app", APP, "demo.hello")
    assert result.returncode == 0
    assert result.stdout.splitlines()[0] == "flowchart TD"
    assert "greet -->|ok| linger" in result.stdout
    assert squidmesh("graph", "--app", APP, "nope").returncode == 1


def test_factory_apps_are_called() -> None:
    result = squidmesh("graph", "--app", "tests.cli.sample_app:make_runtime", "demo.hello")
    assert result.returncode == 0


def test_unknown_command_fails_with_usage() -> None:
    result = squidmesh("fly")
    assert result.returncode == 2
    assert "usage: squidmesh" in result.stderr


def test_architecture_doc_shows_the_code_tables() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    assert f"{START_MARK}\n{markdown_tables()}\n{END_MARK}" in text


def test_docs_tables_rewrites_the_section(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n{START_MARK}\nstale\n{END_MARK}\noutro\n")
    assert main(["docs-tables", "--write", str(doc)]) == 0
    assert doc.read_text() == render_tables_into(f"intro\n{START_MARK}\n{END_MARK}\noutro\n")
    assert "stale" not in doc.read_text()


def test_run_commands_share_state_through_the_embedded_store(tmp_path: Path) -> None:
    env = {"SQUIDMESH_TEST_CLI_STORE": f"sqlite:{tmp_path}/cli.db"}
    started = squidmesh(
        "run", "start", "--app", APP, "demo.hello", '{"name": "cy"}', "--json", env=env
    )
    assert started.returncode == 0, started.stderr
    run_id = json.loads(started.stdout)["id"]

    shown = squidmesh("run", "show", "--app", APP, run_id, env=env)
    assert shown.returncode == 0 and "status    pending" in shown.stdout

    listed = squidmesh("run", "list", "--app", APP, "--status", "pending", env=env)
    assert run_id in listed.stdout and "demo.hello" in listed.stdout

    replayed = squidmesh("run", "replay", "--app", APP, run_id, "--json", env=env)
    assert replayed.returncode == 0
    assert json.loads(replayed.stdout)["replayed_from"] == run_id

    cancelled = squidmesh("run", "cancel", "--app", APP, run_id, "--json", env=env)
    assert json.loads(cancelled.stdout)["status"] == "cancelled"
    again = squidmesh("run", "cancel", "--app", APP, run_id, env=env)
    assert again.returncode == 1 and "error: invalid_transition" in again.stderr

    everything = squidmesh("run", "list", "--app", APP, "--json", env=env)
    assert len(json.loads(everything.stdout)) == 2


def test_idempotent_start_from_the_cli(tmp_path: Path) -> None:
    env = {"SQUIDMESH_TEST_CLI_STORE": f"sqlite:{tmp_path}/idem.db"}
    first = squidmesh(
        "run",
        "start",
        "--app",
        APP,
        "demo.hello",
        '{"name": "a"}',
        "--idempotency-key",
        "k",
        "--json",
        env=env,
    )
    second = squidmesh(
        "run",
        "start",
        "--app",
        APP,
        "demo.hello",
        '{"name": "b"}',
        "--idempotency-key",
        "k",
        "--json",
        env=env,
    )
    assert json.loads(first.stdout)["id"] == json.loads(second.stdout)["id"]
    assert json.loads(second.stdout)["existing"] is True


def test_schedule_list_prints_next_fire_times_in_the_triggers_zone(tmp_path: Path) -> None:
    env = {"SQUIDMESH_EXAMPLE_DB": str(tmp_path / "x.db")}
    result = squidmesh(
        "schedule", "list", "--app", "examples.hello_app:scheduled_runtime", "--count", "2", env=env
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "demo.digest / weekday_mornings: 30 8 * * 1-5 in Europe/Riga, active"
    assert len(lines) == 3
    assert all("T08:30:00+0" in line for line in lines[1:])
    plain = squidmesh("schedule", "list", "--app", "examples.hello_app:runtime", env=env)
    assert plain.stdout.strip() == "no cron triggers"


def test_people_in_the_loop_from_the_cli(tmp_path: Path) -> None:
    env = {"SQUIDMESH_TEST_CLI_STORE": f"sqlite:{tmp_path}/people.db"}
    order = '{"order_id": "o-1", "amount": 5}'
    with worker(env=env):  # runs the steps up to the approval, then stops
        started = start_and_wait("examples.order_approval", order, env=env)
    assert started.returncode == 0, started.stderr
    run = json.loads(started.stdout)
    assert (run["status"], run["parked_step"]) == ("paused", "review")
    assert "run explain" in started.stderr
    run_id = run["id"]

    explained = squidmesh("run", "explain", "--app", APP, run_id, env=env)
    assert explained.returncode == 0
    assert "paused_for_approval" in explained.stdout
    assert f"squidmesh run approve --app {APP} {run_id} --actor NAME" in explained.stdout
    as_json = json.loads(
        squidmesh("run", "explain", "--app", APP, run_id, "--json", env=env).stdout
    )
    assert as_json["reason"] == "paused_for_approval"
    assert [a["action"] for a in as_json["next_actions"]] == [
        "approve_run",
        "reject_run",
        "cancel_run",
    ]

    no_actor = squidmesh("run", "approve", "--app", APP, run_id, env=env)
    assert no_actor.returncode == 2 and "--actor" in no_actor.stderr
    wrong = squidmesh("run", "unblock", "--app", APP, run_id, "--actor", "ana", env=env)
    assert wrong.returncode == 1
    assert "error: invalid_step: run" in wrong.stderr and "waits at 'review'" in wrong.stderr

    args = ("--actor", "ana", "--note", "ok", "--idempotency-key", "k1")
    approved = squidmesh("run", "approve", "--app", APP, run_id, *args, "--json", env=env)
    assert approved.returncode == 0, approved.stderr
    receipt = json.loads(approved.stdout)["receipt"]
    assert receipt["repeated"] is False and receipt["entry"]["actor"] == "ana"
    again = squidmesh("run", "approve", "--app", APP, run_id, *args, env=env)
    assert again.returncode == 0 and "repeated: the first receipt" in again.stdout

    bad = squidmesh("run", "signal", "--app", APP, run_id, "shipped", "--payload", "{}", env=env)
    assert bad.returncode == 1 and "invalid_signal_payload" in bad.stderr
    shipped = '{"carrier": "dhl", "tracking": "T9"}'
    sent = squidmesh(
        "run", "signal", "--app", APP, run_id, "shipped", "--payload", shipped, env=env
    )
    assert sent.returncode == 0, sent.stderr
    shown = squidmesh("run", "show", "--app", APP, run_id, env=env)
    assert "next      notify due at" in shown.stdout
    assert "approved by ana" in shown.stdout and "audit trail:" in shown.stdout
    assert "signal 'shipped' received" in shown.stdout
