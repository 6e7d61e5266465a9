"""Every way the CLI can be misused or find a service down: a sentence and its exit code.

Each case runs the real ``squidmesh`` command in a subprocess, against real
services where the case names one (Redis on a dead port, a PostgreSQL database
that does not exist, a role that does not exist).
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from squidmesh_backends.cli.main import build_parser
from squidmesh_backends.runtime import compose
from tests.cli.harness import APP, ROOT, script, squidmesh
from tests.services import DSN, require_postgres, require_redis

pytestmark = pytest.mark.slow


def dead_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr


# ------------------------------------------------------------------ Redis down


def test_redis_on_a_dead_port_stops_worker_wait_and_smoke_within_seconds(tmp_path: Path) -> None:
    require_redis()
    url = f"redis://127.0.0.1:{dead_port()}/0"
    env = {"SQUIDMESH_TEST_CLI_STORE": f"sqlite:{tmp_path}/r.db", "SQUIDMESH_TEST_CLI_BROKER": url}
    for args in (
        ("worker", "--app", APP),
        ("run", "start", "--app", APP, "demo.hello", '{"name": "a"}', "--wait"),
        ("smoke", "--broker", url),
    ):
        began = time.monotonic()
        result = squidmesh(*args, env=env, cwd=ROOT, timeout=60)
        took = time.monotonic() - began
        assert result.returncode == 2, (args, result.stderr)
        assert took < 10, (args, took)
        no_traceback(result)
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("error: cannot reach Redis at 127.0.0.1:"), (args, last)
        assert url.split("//")[1].split("/", maxsplit=1)[0] in last
    # --wait refused before it started anything
    listed = squidmesh("run", "list", "--app", APP, "--json", env=env)
    assert json.loads(listed.stdout) == []


# ------------------------------------------------------------------ PostgreSQL refusals


@pytest.mark.parametrize(
    ("dsn_of", "said"),
    [
        (lambda dsn: dsn.rsplit("/", 1)[0] + "/squidmesh_no_such_db", "does not exist"),
        (lambda dsn: dsn.replace("postgres@", "squidmesh_no_role@"), 'role "squidmesh_no_role"'),
    ],
    ids=["missing-database", "missing-role"],
)
def test_postgres_refusals_fail_at_once_with_the_servers_reason(dsn_of, said) -> None:  # type: ignore[no-untyped-def]
    require_postgres()
    env = {"SQUIDMESH_TEST_CLI_STORE": dsn_of(DSN)}
    began = time.monotonic()
    result = squidmesh("run", "list", "--app", APP, env=env)
    assert time.monotonic() - began < 8
    assert result.returncode == 2
    no_traceback(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines  # no retry warnings
    assert lines[0].startswith("error: PostgreSQL refused the connection")
    assert said in lines[0]
    migrated = squidmesh("migrate", "--dsn", dsn_of(DSN))
    assert migrated.returncode == 2 and said in migrated.stderr
    assert len(migrated.stderr.strip().splitlines()) == 1


def test_an_unreachable_postgres_is_retried_for_the_bound_then_named() -> None:
    port = dead_port()
    began = time.monotonic()
    result = squidmesh(
        "migrate", "--dsn", f"postgresql://postgres@127.0.0.1:{port}/test", "--wait", "1.5"
    )
    assert 1.0 < time.monotonic() - began < 10
    assert result.returncode == 2
    no_traceback(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) <= 2, lines  # one warning at most, then the error
    assert lines[-1].startswith("error: PostgreSQL unavailable")
    assert f"port {port} failed" in lines[-1]


# ------------------------------------------------------------------ --app mistakes


def test_every_app_mistake_is_a_sentence_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "broken_at_import.py").write_text("raise RuntimeError('boom at import')\n")
    cases = {
        "tests/cli/sample_app.py:runtime": "takes a module, not a file path",
        "tests/cli/sample_app.py": "takes a module, not a file path",
        "nomodule": "must look like 'package.module:attribute'",
        "no.such.module:runtime": "cannot import 'no.such.module'",
        "tests.cli.sample_app:missing": "has no attribute 'missing'",
        "tests.cli.sample_app:SETTINGS": "is a RuntimeSettings, not a squidmesh Runtime",
        "tests.cli.sample_app:needs_arguments": "is a function that needs arguments",
        "tests.cli.sample_app:async_factory": "is an async function",
        "examples.hello_app:Greeting": "is the class Greeting, not a squidmesh Runtime",
        "squidmesh_backends.runtime:Runtime": "is the class Runtime, not a squidmesh Runtime",
        "tests.cli.sample_app:os": "is a module, not a squidmesh Runtime",
        "broken_at_import:runtime": "importing 'broken_at_import' failed: RuntimeError: boom",
    }
    for spec, said in cases.items():
        cwd = tmp_path if spec.startswith("broken") else ROOT
        result = squidmesh("run", "list", "--app", spec, cwd=cwd)
        assert result.returncode == 2, spec
        no_traceback(result)
        assert result.stderr.startswith("error: ") and said in result.stderr, (spec, result.stderr)


# ------------------------------------------------------------------ output and help


def test_output_piped_into_head_ends_quietly(tmp_path: Path) -> None:
    store = f"sqlite:{tmp_path}/many.db"
    import asyncio

    from examples.hello_app import hello

    async def fill() -> None:
        async with compose(workflows=[hello], store=store) as _:
            pass
        runtime = compose(workflows=[hello], store=store)
        for n in range(1200):
            await runtime.start_run("demo.hello", {"name": f"n{n}"})
        await runtime.aclose()

    asyncio.run(fill())
    piped = subprocess.run(
        f"set -o pipefail; {script()} run list --app {APP} --limit 1000 | head -2",
        shell=True,
        executable="/bin/bash",
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"SQUIDMESH_TEST_CLI_STORE": store, "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )
    assert piped.stderr == ""
    assert len(piped.stdout.splitlines()) == 2
    assert piped.returncode in (0, 141)


def test_developer_commands_are_hidden_and_every_option_explains_itself() -> None:
    shown = squidmesh("--help").stdout
    assert "docs-tables" not in shown
    for command in ("smoke", "worker", "run", "status", "doctor", "prune", "migrate", "graph"):
        assert command in shown

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif not isinstance(action, argparse._HelpAction | argparse._VersionAction):
                assert action.help, f"{path} {action.option_strings or action.dest} has no help"
                if action.choices is not None:
                    listed = ", ".join(map(str, action.choices))
                    assert listed in action.help or action.metavar is None, (path, action.dest)

    walk(build_parser(), "squidmesh")
    worker_help = squidmesh("worker", "--help").stdout
    assert "{debug,info,warning,error}" in worker_help and "{text,json}" in worker_help
    assert "completed" in squidmesh("run", "list", "--help").stdout


def test_smoke_does_not_create_missing_folders(tmp_path: Path) -> None:
    target = tmp_path / "not" / "here" / "smoke.db"
    result = squidmesh("smoke", "--store", f"sqlite:{target}")
    assert result.returncode == 2
    no_traceback(result)
    assert "does not exist; create it first" in result.stderr
    assert not (tmp_path / "not").exists()


# ------------------------------------------------------------------ a client is a client


def test_cli_commands_never_run_steps_and_ctrl_c_stops_only_the_wait(tmp_path: Path) -> None:
    env = {"SQUIDMESH_TEST_CLI_STORE": f"sqlite:{tmp_path}/client.db"}
    other = json.loads(
        squidmesh(
            "run", "start", "--app", APP, "demo.hello", '{"name": "o"}', "--json", env=env
        ).stdout
    )
    waited = squidmesh(
        "run",
        "start",
        "--app",
        APP,
        "demo.hello",
        '{"name": "w"}',
        "--wait",
        "--timeout",
        "1.5",
        env=env,
    )
    assert waited.returncode == 1
    assert "is still pending after 1.5s; it goes on" in waited.stderr
    for run in json.loads(squidmesh("run", "list", "--app", APP, "--json", env=env).stdout):
        assert run["status"] == "pending", run  # neither run was touched by the client
    shown = json.loads(
        squidmesh("run", "show", "--app", APP, other["id"], "--json", env=env).stdout
    )
    assert all(not s["attempts"] for s in shown["history"])

    process = subprocess.Popen(
        [script(), "run", "start", "--app", APP, "demo.hello", '{"name": "c"}', "--wait"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**__import__("os").environ, **env},
    )
    assert process.stderr is not None
    started = process.stderr.readline()
    assert "started; waiting up to" in started, started
    process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert "Traceback" not in err
    run_id = started.split()[1]
    assert f"stopped waiting; run {run_id} goes on" in err
    still = json.loads(squidmesh("run", "show", "--app", APP, run_id, "--json", env=env).stdout)
    assert still["status"] == "pending"


def test_wait_on_a_memory_store_is_refused_before_starting() -> None:
    result = squidmesh("run", "start", "--app", APP, "demo.hello", '{"name": "m"}', "--wait")
    assert result.returncode == 2
    assert "--wait needs a store a worker process can share" in result.stderr


def test_a_hostile_error_message_cannot_forge_or_restyle_cli_output(tmp_path: Path) -> None:
    from tests.cli.harness import worker

    env = {"SQUIDMESH_TEST_CLI_STORE": f"sqlite:{tmp_path}/hostile.db"}
    with worker(env=env):
        waited = squidmesh("run", "start", "--app", APP, "demo.hostile", "{}", "--wait", env=env)
    assert waited.returncode == 1
    run_id = waited.stderr.split()[1]
    shown = squidmesh("run", "show", "--app", APP, run_id, env=env).stdout
    explained = squidmesh("run", "explain", "--app", APP, run_id, env=env).stdout
    for out in (waited.stdout, shown, explained):
        assert "\x1b" not in out and "\r" not in out
        assert not any(line.startswith("run 00000000") for line in out.splitlines())
        assert "FORGED" in out and "[bold]markup[/bold]" in out  # shown, inert


def test_bulk_selection_pages_past_one_listing_page(tmp_path: Path) -> None:
    import asyncio

    from examples.hello_app import hello

    store = f"sqlite:{tmp_path}/bulk.db"

    async def fill() -> None:
        runtime = compose(workflows=[hello], store=store)
        for n in range(1210):
            await runtime.start_run("demo.hello", {"name": f"n{n}"})
        await runtime.aclose()

    asyncio.run(fill())
    env = {"SQUIDMESH_TEST_CLI_STORE": store}
    preview = squidmesh("run", "cancel", "--app", APP, "--status", "pending", "--json", env=env)
    selected = json.loads(preview.stdout)
    assert selected["matched"] == 1210 and len(set(selected["runs"])) == 1210
