"""``squidmesh smoke``: a payment recovery, an approval and a saga, end to end, with checks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import TextIO

import redis
import redis.asyncio
from returns.result import Failure

from squidmesh_backends.cli.console import plain
from squidmesh_backends.cli.gateway import GatewayStub
from squidmesh_backends.cli.render import summary, timeline
from squidmesh_backends.cli.smoke_app import SETTINGS
from squidmesh_backends.cli.worker import READY
from squidmesh_backends.errors import ConfigurationError
from squidmesh_backends.examples.order_approval import ORDER_APPROVAL
from squidmesh_backends.examples.order_saga import ORDER_SAGA
from squidmesh_backends.examples.payment_recovery import payment_recovery
from squidmesh_backends.postgres import migrate
from squidmesh_backends.runtime import Runtime, compose
from squidmesh_backends.runtime.bootstrap import split_schema
from squidmesh_backends.taskiq import reach_broker, redis_stream_broker
from squidmesh_core.commands import Emit
from squidmesh_core.state import AttemptStatus, OperatorCommand, RunStatus
from squidmesh_core.views import Run


class PrintingSink:
    """Prints each event as it is published (``--verbose``)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def publish(self, event: Emit) -> None:
        where = f" {event.step}#{event.attempt}" if event.step else ""
        print(f"  event {event.topic}{where} {dict(event.attributes)}", file=self.out, flush=True)


def check(run: Run, gateway_requests: int) -> list[str]:
    """What must be true of the smoke run; returns the failed checks."""
    problems: list[str] = []
    if run.status is not RunStatus.COMPLETED:
        problems.append(f"run is {run.status.value}, expected completed")
    history = {s.step: s for s in run.history or ()}
    gateway = history.get("check_gateway")
    if gateway is None or [a.status for a in gateway.attempts] != [
        AttemptStatus.FAILED,
        AttemptStatus.SUCCEEDED,
    ]:
        problems.append("check_gateway should fail once (HTTP 503) and then succeed")
    if run.context.get("gateway") != {"status": "settled", "checked_on_attempt": 2}:
        problems.append(f"unexpected gateway output: {run.context.get('gateway')!r}")
    if run.context.get("notification") != {"channel": "email", "to": "acct-42"}:
        problems.append("notify_customer output is missing from the context")
    if gateway_requests != 2:
        problems.append(f"the gateway stub saw {gateway_requests} requests, expected 2")
    wait_step = history.get("wait_for_settlement")
    log_step = history.get("log_attempt")
    if wait_step and log_step and log_step.attempts and wait_step.attempts:
        finished = wait_step.attempts[-1].finished_at
        if finished is None or log_step.attempts[0].started_at - finished < timedelta(seconds=2):
            problems.append("the step after the wait started before the wait was over")
    return problems


async def run_smoke(
    *,
    verbose: bool,
    store: str | None = None,
    broker: str | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Run the example through a real runtime and a loopback gateway; 0 if every check passes.

    ``store`` is a store spec (``memory``, ``sqlite:PATH``, ``postgresql://...``);
    by default a fresh SQLite file in a temporary directory, the embedded durable
    store. A PostgreSQL schema is migrated first, as a deployment would.

    With ``broker`` (``redis://...``) the steps run in a separate
    ``squidmesh worker`` process through Taskiq, and this process only starts
    the run and watches the store; the worker is stopped with SIGTERM at the end.
    """
    if store is None:
        with tempfile.TemporaryDirectory(prefix="squidmesh-smoke-") as folder:
            return await run_smoke(
                verbose=verbose, store=f"sqlite:{folder}/smoke.db", broker=broker, out=out
            )
    if broker is not None and store == "memory":
        print("smoke: a worker process cannot share the memory store", file=out)
        return 2
    if store.startswith(("postgresql://", "postgres://")):
        dsn, schema = split_schema(store)
        applied = await migrate(dsn, schema=schema)
        print(f"migrated schema {schema} (applied: {list(applied) or 'nothing new'})", file=out)
    async with (
        GatewayStub([(503, {"error": "busy"}), (200, {"status": "settled"})]) as gateway,
        _worker_process(store, broker, out) as worker,
    ):
        runtime = compose(
            workflows=[payment_recovery, ORDER_APPROVAL, ORDER_SAGA],
            store=store,
            settings=SETTINGS,
            sinks=[PrintingSink(out)] if verbose else [],
        )
        # With a worker process this runtime is never started: it only starts the run.
        async with runtime if worker is None else _closing(runtime):
            started = await runtime.start_run(
                payment_recovery,
                {"account_id": "acct-42", "invoice_id": "inv-7", "gateway_url": gateway.url},
            )
            if isinstance(started, Failure):
                print(f"could not start the example run: {started.failure()}", file=out)
                return 1
            print(
                f"started {started.unwrap().id}; gateway stub at {gateway.url}",
                file=out,
                flush=True,
            )
            done = (
                await runtime.wait_for(started.unwrap().id, timeout=timedelta(seconds=60))
            ).unwrap()
            approved = await _approval_scenario(runtime, out)
            undone = await _saga_scenario(runtime, out)
    if worker is not None:
        print(f"worker process {worker.pid} stopped with exit code {worker.returncode}", file=out)
    print(summary(done), file=out)
    print(plain(timeline(done)), file=out)
    problems = check(done, len(gateway.requests))
    print(summary(approved), file=out)
    print(plain(timeline(approved)), file=out)
    problems += check_approval(approved)
    print(summary(undone), file=out)
    print(plain(timeline(undone)), file=out)
    problems += check_saga(undone)
    if worker is not None and worker.returncode != 0:
        problems.append(f"the worker process exited with {worker.returncode} on SIGTERM")
    for problem in problems:
        print(f"CHECK FAILED: {problem}", file=out)
    print("smoke: all checks passed" if not problems else "smoke: FAILED", file=out)
    return 1 if problems else 0


async def _approval_scenario(runtime: Runtime, out: TextIO) -> Run:
    """An order that parks for a reviewer: approved here, through the API, then shipped."""
    started = (
        await runtime.start_run(ORDER_APPROVAL, {"order_id": "ord-9", "amount": 120})
    ).unwrap()
    parked = (
        await runtime.wait_for(started.id, timeout=timedelta(seconds=60), or_paused=True)
    ).unwrap()
    print(f"order run {parked.id} is {parked.status.value} at {parked.parked_step}", file=out)
    approved = await runtime.approve_run(
        parked.id, actor="smoke", note="approved by the smoke check", idempotency_key="smoke-1"
    )
    if isinstance(approved, Failure):
        print(f"approve_run was refused: {approved.failure()}", file=out)
    shipped = await runtime.send_signal(
        parked.id, "shipped", {"carrier": "loopback", "tracking": "T-1"}, actor="warehouse"
    )
    if isinstance(shipped, Failure):
        print(f"send_signal was refused: {shipped.failure()}", file=out)
    return (await runtime.wait_for(parked.id, timeout=timedelta(seconds=60))).unwrap()


def check_approval(run: Run) -> list[str]:
    """What must be true of the approval run."""
    problems: list[str] = []
    if run.status is not RunStatus.COMPLETED:
        problems.append(f"the order run is {run.status.value}, expected completed")
    audit = run.audit or ()
    if [(e.command, e.actor) for e in audit] != [
        (OperatorCommand.APPROVE, "smoke"),
        (OperatorCommand.SIGNAL, "warehouse"),
    ]:
        problems.append(f"unexpected audit trail: {[(e.command, e.actor) for e in audit]}")
    review = run.context.get("review")
    if not isinstance(review, dict) or review.get("decision") != "approved":
        problems.append(f"the review decision is missing from the context: {review!r}")
    if run.context.get("notified") != {"order_id": "ord-9", "tracking": "T-1"}:
        problems.append(f"unexpected notification: {run.context.get('notified')!r}")
    return problems


async def _saga_scenario(runtime: Runtime, out: TextIO) -> Run:
    """An order no courier can take: it fails, refunding the charge and releasing the stock."""
    started = (
        await runtime.start_run(ORDER_SAGA, {"order_id": "ord-13", "amount": 80, "courier": "none"})
    ).unwrap()
    print(f"saga run {started.id} started (no courier will take it)", file=out, flush=True)
    return (await runtime.wait_for(started.id, timeout=timedelta(seconds=60))).unwrap()


def check_saga(run: Run) -> list[str]:
    """What must be true of the saga run: failed, compensated latest first, each once."""
    problems: list[str] = []
    if run.status is not RunStatus.FAILED:
        problems.append(f"the saga run is {run.status.value}, expected failed")
    if run.last_error is None or run.last_error.details.get("code") != "no_courier":
        problems.append(f"unexpected saga error: {run.last_error!r}")
    undone = [s for s in run.history or () if s.step.endswith(":compensate")]
    if [(s.step, s.status.value, len(s.attempts)) for s in undone] != [
        ("charge_card:compensate", "completed", 1),
        ("reserve_stock:compensate", "completed", 1),
    ]:
        problems.append(f"unexpected compensations: {[(s.step, s.status) for s in undone]}")
    if run.compensation is None or run.compensation.finished_at is None:
        problems.append("the saga run's compensation did not finish")
    return problems


@contextlib.asynccontextmanager
async def _closing(runtime: Runtime) -> AsyncIterator[Runtime]:
    try:
        yield runtime
    finally:
        await runtime.aclose()


@contextlib.asynccontextmanager
async def _worker_process(
    store: str, broker: str | None, out: TextIO
) -> AsyncIterator[asyncio.subprocess.Process | None]:
    """A ``squidmesh worker`` child running the smoke app, stopped with SIGTERM on exit."""
    if broker is None:
        yield None
        return
    queue = f"squidmesh_smoke_{secrets.token_hex(4)}"
    await reach_broker(redis_stream_broker(broker, lease=SETTINGS.lease, queue=queue))
    env = {
        **os.environ,
        "SQUIDMESH_SMOKE_STORE": store,
        "SQUIDMESH_SMOKE_BROKER": broker,
        "SQUIDMESH_SMOKE_QUEUE": queue,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "squidmesh_backends.cli.main",
        "worker",
        "--app",
        "squidmesh_backends.cli.smoke_app:runtime",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    drain: asyncio.Task[bytes] | None = None
    try:
        seen: list[bytes] = []
        async with asyncio.timeout(30):
            while (line := await proc.stdout.readline()) and READY not in line.decode():
                seen.append(line)  # the worker's log lines before it is ready
        if READY not in line.decode():
            raise ConfigurationError(f"the worker did not start: {b''.join(seen).decode()}")
        print(line.decode().strip(), file=out, flush=True)
        # Keep reading the worker's output so a chatty worker never blocks on a full pipe.
        drain = asyncio.create_task(proc.stdout.read())
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if drain is not None:
            await asyncio.gather(drain, return_exceptions=True)
        client = redis.asyncio.Redis.from_url(broker)
        try:
            await client.delete(queue)
        except redis.RedisError as exc:  # never hide the error that ended the smoke run
            print(f"smoke: could not delete stream {queue}: {exc}", file=out)
        finally:
            await client.aclose()
