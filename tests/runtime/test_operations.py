"""Operator commands over the whole store: status, pruning, paged listings, workers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from returns.result import Failure, Success

from squidmesh_backends.errors import BackendUnavailableError
from squidmesh_backends.memory import MemoryRunStore
from squidmesh_backends.runtime import InProcessExecutor, Runtime, RuntimeSettings, compose
from squidmesh_backends.runtime._presence import Presence, _claim, _release
from squidmesh_backends.runtime.client import Client
from squidmesh_backends.runtime.clock import FakeClock
from squidmesh_backends.runtime.settings import default_owner
from squidmesh_backends.runtime.testing import TimeSkippingRuntime
from squidmesh_core import (
    COMPLETE,
    InvalidOption,
    PruneReport,
    RunStatus,
    StepContext,
    chain,
    cron,
    manual,
    step,
    wait,
    workflow,
)
from squidmesh_core.jsonvalue import JsonObject
from squidmesh_core.operations import PruneCount
from squidmesh_core.testing.contracts.operations import cancelled
from squidmesh_core.testing.contracts.run_store import T0, run_id

DAY = timedelta(days=1)


async def noop(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    return {}


FLOW = workflow(
    "ops.flow",
    triggers=[manual(), cron("nightly", "0 3 * * *")],
    steps=[step("first", noop), step("second", noop), wait("nap", timedelta(hours=1))],
    transitions=chain("first", "second", "nap", COMPLETE),
)
QUICK = workflow(
    "ops.quick",
    triggers=[manual()],
    steps=[step("only", noop)],
    transitions=chain("only", COMPLETE),
)


@pytest.fixture
def rt() -> TimeSkippingRuntime:
    return TimeSkippingRuntime(workflows=[FLOW, QUICK], settings=RuntimeSettings(owner="worker-7"))


async def finished(rt: TimeSkippingRuntime, workflow: str = "ops.quick") -> str:
    run = (await rt.start_run(workflow, {})).unwrap()
    done = await rt.run_until_complete(run.id)
    assert done.status is RunStatus.COMPLETED
    return run.id


async def cancelled_cron(rt: TimeSkippingRuntime, tick: str) -> str:
    run = (
        await rt.client.start_cron_run(
            "ops.flow", {}, trigger="nightly", idempotency_key=f"cron:nightly:{tick}"
        )
    ).unwrap()
    assert (await rt.cancel_run(run.id)).unwrap().status is RunStatus.CANCELLED
    return run.id


async def exists(rt: TimeSkippingRuntime, run_id: str) -> bool:
    return isinstance(await rt.inspect_run(run_id), Success)


# ---------------------------------------------------------------- attempts


async def test_every_attempt_names_the_worker_that_ran_it(rt: TimeSkippingRuntime) -> None:
    run_id = await finished(rt, "ops.flow")
    run = (await rt.inspect_run(run_id, include_history=True)).unwrap()
    assert run.history is not None
    workers = {s.step: [a.worker for a in s.attempts] for s in run.history}
    assert workers == {"first": ["worker-7"], "second": ["worker-7"], "nap": ["worker-7"]}


async def test_an_inline_chain_records_its_worker_on_every_step(tmp_path: Path) -> None:
    settings = RuntimeSettings(
        owner="inline-w",
        poll_interval=timedelta(milliseconds=20),
        lease=timedelta(seconds=2),
        heartbeat_every=timedelta(milliseconds=200),
    )
    chained = workflow(
        "ops.chained",
        triggers=[manual()],
        steps=[step("a", noop), step("b", noop), step("c", noop)],
        transitions=chain("a", "b", "c", COMPLETE),
    )
    runtime = compose(
        workflows=[chained], store=f"sqlite:{tmp_path / 'runs.db'}", settings=settings
    )
    async with runtime:
        run = (await runtime.start_run("ops.chained", {})).unwrap()
        done = (await runtime.wait_for(run.id)).unwrap()
    assert done.status is RunStatus.COMPLETED and done.history is not None
    assert [a.worker for s in done.history for a in s.attempts] == ["inline-w"] * 3


# ---------------------------------------------------------------- status


async def test_the_store_status_counts_runs_and_due_jobs(rt: TimeSkippingRuntime) -> None:
    await finished(rt)
    (await rt.start_run("ops.flow", {})).unwrap()
    status = await rt.store_status()
    counts = {(c.workflow, c.status): c.count for c in status.runs}
    assert counts == {("ops.flow", RunStatus.PENDING): 1, ("ops.quick", RunStatus.COMPLETED): 1}
    assert (status.due_jobs, status.oldest_due_at) == (1, rt.now)
    assert (status.leased_jobs, status.leases_expired, status.expired_leases) == (0, 0, ())
    assert (status.schema_version, status.schema_expected) == (None, None)


async def test_the_store_status_uses_the_clients_clock(rt: TimeSkippingRuntime) -> None:
    (await rt.start_run("ops.flow", {})).unwrap()
    await rt.store.claim_due(
        now=rt.now, limit=1, lease_for=timedelta(seconds=30), owner="w", mint=rt.ids.new_lease_token
    )
    assert (await rt.store_status(expiring_within=timedelta(seconds=10))).leases_expiring == 0
    assert (await rt.store_status(expiring_within=timedelta(seconds=30))).leases_expiring == 1
    rt.fake_clock.set(rt.now + timedelta(minutes=1))
    late = await rt.store_status()
    assert (late.leased_jobs, late.leases_expired, late.due_jobs) == (0, 1, 1)
    assert late.expired_leases[0].owner == "w"


async def test_the_store_status_refuses_a_negative_window(rt: TimeSkippingRuntime) -> None:
    with pytest.raises(ValueError, match="expiring_within"):
        await rt.store_status(expiring_within=timedelta(seconds=-1))


# ---------------------------------------------------------------- prune


async def test_prune_deletes_finished_runs_older_than_asked(rt: TimeSkippingRuntime) -> None:
    old = await finished(rt)
    rt.fake_clock.set(rt.now + 10 * DAY)
    recent = await finished(rt)
    active = (await rt.start_run("ops.flow", {})).unwrap().id
    report = (await rt.prune_runs(older_than=5 * DAY)).unwrap()
    assert report == PruneReport(matched=1, deleted=1, kept_cron=0, dry_run=False, batches=1)
    assert [await exists(rt, r) for r in (old, recent, active)] == [False, True, True]


async def test_a_dry_run_reports_and_deletes_nothing(rt: TimeSkippingRuntime) -> None:
    runs = [await finished(rt) for _ in range(3)]
    rt.fake_clock.set(rt.now + 2 * DAY)
    report = (await rt.prune_runs(older_than=DAY, dry_run=True)).unwrap()
    assert report == PruneReport(matched=3, deleted=0, kept_cron=0, dry_run=True, batches=0)
    assert all([await exists(rt, r) for r in runs])


async def test_prune_goes_in_batches_and_reports_each(rt: TimeSkippingRuntime) -> None:
    for _ in range(5):
        await finished(rt)
    rt.fake_clock.set(rt.now + 2 * DAY)
    seen: list[int] = []
    report = (await rt.prune_runs(older_than=DAY, batch_size=2, on_batch=seen.append)).unwrap()
    assert seen == [2, 2, 1]
    assert (report.matched, report.deleted, report.batches) == (5, 5, 3)
    assert (await rt.list_runs()).unwrap() == ()


async def test_prune_keeps_the_newest_run_of_each_cron_trigger(rt: TimeSkippingRuntime) -> None:
    older = await cancelled_cron(rt, "2026-01-01T03:00:00Z")
    rt.fake_clock.set(rt.now + timedelta(seconds=1))
    newest = await cancelled_cron(rt, "2026-01-02T03:00:00Z")
    rt.fake_clock.set(rt.now + 2 * DAY)
    report = (await rt.prune_runs(older_than=DAY, statuses=["cancelled"])).unwrap()
    assert (report.matched, report.deleted, report.kept_cron) == (1, 1, 1)
    assert [await exists(rt, r) for r in (older, newest)] == [False, True]
    latest = await rt.store.latest_idempotency_key("ops.flow", "cron:nightly:")
    assert latest == "cron:nightly:2026-01-02T03:00:00Z"  # the cron loop still knows its tick


async def test_a_replay_of_an_older_tick_does_not_displace_the_newest_tick(
    rt: TimeSkippingRuntime,
) -> None:
    # given: ticks on the 1st and 2nd, then a replay of the 1st (the same trigger, no key)
    older = await cancelled_cron(rt, "2026-01-01T03:00:00Z")
    rt.fake_clock.set(rt.now + timedelta(seconds=1))
    newest = await cancelled_cron(rt, "2026-01-02T03:00:00Z")
    rt.fake_clock.set(rt.now + timedelta(seconds=1))
    replay = (await rt.replay_run(older)).unwrap().id
    assert (await rt.cancel_run(replay)).unwrap().status is RunStatus.CANCELLED
    rt.fake_clock.set(rt.now + 2 * DAY)
    # when
    report = (await rt.prune_runs(older_than=DAY, statuses=["cancelled"])).unwrap()
    # then: the tick the cron loop reads stays
    assert (report.matched, report.deleted, report.kept_cron) == (2, 2, 1)
    assert [await exists(rt, r) for r in (older, newest, replay)] == [False, True, False]


async def test_the_newest_tick_of_a_workflow_this_app_does_not_register_stays(
    rt: TimeSkippingRuntime,
) -> None:
    # given: another application's cron runs in the same store
    for n, hour in ((1, 1), (2, 2)):
        await cancelled(rt.store, n, T0, key=f"cron:hourly:2026-01-01T0{hour}:00:00Z")
    rt.fake_clock.set(T0 + 2 * DAY)
    # when
    report = (await rt.prune_runs(older_than=DAY)).unwrap()
    # then
    assert (report.matched, report.deleted, report.kept_cron) == (1, 1, 1)
    assert [await rt.store.load(run_id(n)) is not None for n in (1, 2)] == [False, True]


class ShortBatches(MemoryRunStore):
    """A store whose deletions come back short, as when rows are locked elsewhere."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    async def count_prunable(
        self, *, finished_before: datetime, statuses: Collection[RunStatus]
    ) -> PruneCount:
        self.calls.append("count")
        return await super().count_prunable(finished_before=finished_before, statuses=statuses)

    async def prune_runs(
        self,
        *,
        finished_before: datetime,
        statuses: Collection[RunStatus],
        limit: int | None,
        dry_run: bool,
    ) -> int:
        self.calls.append("dry" if dry_run else "delete")
        return await super().prune_runs(
            finished_before=finished_before, statuses=statuses, limit=1, dry_run=dry_run
        )


async def test_prune_counts_once_and_deletes_until_a_batch_deletes_nothing() -> None:
    store = ShortBatches()
    for n in (1, 2, 3):
        await cancelled(store, n, T0)
    client = Client(store=store, workflows=[FLOW, QUICK], clock=FakeClock(T0 + 2 * DAY))
    seen: list[int] = []
    report = (await client.prune_runs(older_than=DAY, batch_size=3, on_batch=seen.append)).unwrap()
    assert report == PruneReport(matched=3, deleted=3, kept_cron=0, dry_run=False, batches=3)
    assert seen == [1, 1, 1]
    assert store.calls == ["count", "delete", "delete", "delete", "delete"]
    store.calls.clear()
    assert (await client.prune_runs(older_than=DAY, dry_run=True)).unwrap().matched == 0
    assert store.calls == ["count"]


async def test_prune_leaves_compensation_failed_runs_unless_named(
    rt: TimeSkippingRuntime,
) -> None:
    assert (await rt.prune_runs(older_than=DAY, statuses=["compensation_failed"])).unwrap()
    report = (await rt.prune_runs(older_than=DAY, dry_run=True)).unwrap()
    assert report.matched == 0


@pytest.mark.parametrize(
    ("options", "option", "says"),
    [
        ({"older_than": timedelta(0)}, "older_than", "older_than must be a positive timedelta"),
        ({"older_than": 5}, "older_than", "older_than must be a positive timedelta"),
        ({"statuses": ["running"]}, "statuses", "may not include running"),
        ({"statuses": ["sleeping"]}, "statuses", "must name finished statuses"),
        ({"statuses": "completed"}, "statuses", "must name finished statuses"),
        ({"statuses": []}, "statuses", "must name finished statuses"),
        ({"batch_size": 0}, "batch_size", "from 1 to 10000"),
        ({"batch_size": 10_001}, "batch_size", "from 1 to 10000"),
        ({"batch_size": True}, "batch_size", "must be an integer"),
        ({"dry_run": "yes"}, "dry_run", "must be True or False"),
    ],
)
async def test_prune_refuses_bad_options(
    rt: TimeSkippingRuntime, options: dict[str, object], option: str, says: str
) -> None:
    await finished(rt)
    rt.fake_clock.set(rt.now + 2 * DAY)
    arguments: dict[str, object] = {"older_than": DAY, **options}
    refused = await rt.prune_runs(**arguments)  # type: ignore[arg-type]
    assert isinstance(refused, Failure)
    problem = refused.failure()
    assert isinstance(problem, InvalidOption)
    assert problem.option == option
    assert says in problem.describe()
    assert len((await rt.list_runs()).unwrap()) == 1  # nothing was deleted


# ---------------------------------------------------------------- listing


async def test_runs_are_listed_by_creation_time_and_paged(rt: TimeSkippingRuntime) -> None:
    ids = []
    for _ in range(5):
        ids.append((await rt.start_run("ops.quick", {})).unwrap().id)
        rt.fake_clock.set(rt.now + timedelta(minutes=1))
    start = rt.now - timedelta(minutes=5)
    window = await rt.list_runs(
        created_after=start + timedelta(minutes=1), created_before=start + timedelta(minutes=3)
    )
    assert [r.id for r in window.unwrap()] == [ids[2], ids[1]]
    pages, after = [], None
    while True:
        page = (await rt.list_runs(limit=2, after=after)).unwrap()
        pages.append([r.id for r in page])
        if len(page) < 2:
            break
        after = page[-1].id
    assert pages == [[ids[4], ids[3]], [ids[2], ids[1]], [ids[0]]]


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"created_after": datetime(2026, 1, 1)}, "created_after"),
        ({"created_before": "2026-01-01"}, "created_before"),
        (
            {
                "created_after": datetime(2026, 1, 2, tzinfo=UTC),
                "created_before": datetime(2026, 1, 1, tzinfo=UTC),
            },
            "created_after",
        ),
        ({"after": "not-a-run"}, "after"),
        ({"after": "00000000-0000-4000-8000-000000000099"}, "after"),
    ],
)
async def test_listing_refuses_bad_ranges_and_cursors(
    rt: TimeSkippingRuntime, options: dict[str, object], option: str
) -> None:
    refused = await rt.list_runs(**options)  # type: ignore[arg-type]
    assert isinstance(refused, Failure)
    assert refused.failure().option == option


# ---------------------------------------------------------------- workers


FAST = RuntimeSettings(
    owner="host-a:42",
    poll_interval=timedelta(milliseconds=20),
    lease=timedelta(seconds=1),
    heartbeat_every=timedelta(milliseconds=50),
)


async def test_a_worker_reports_itself_while_it_runs_and_when_it_stops() -> None:
    store = MemoryRunStore()
    runtime = Runtime(
        store=store,
        workflows=[QUICK, FLOW],
        executor=InProcessExecutor(concurrency=3),
        settings=FAST,
    )
    async with runtime:
        [started] = (await runtime.store_status()).workers
        assert (started.name, started.stopped_at) == ("host-a:42", None)
        details: JsonObject = started.details
        assert details["executor"] == "InProcessExecutor"
        assert details["concurrency"] == 3
        assert details["workflows"] == ["ops.flow", "ops.quick"]
        assert {"pid", "host"} <= set(details)
        await asyncio.sleep(0.2)
        [running] = (await runtime.store_status()).workers
        assert running.last_seen > started.last_seen
        assert running.first_seen == started.first_seen
    [stopped] = (await runtime.store_status()).workers
    assert stopped.stopped_at == stopped.last_seen
    assert stopped.stopped_at is not None and stopped.stopped_at >= running.last_seen


class UnreachableReports(MemoryRunStore):
    """A store whose worker reports fail, as in an outage; everything else works."""

    def __init__(self) -> None:
        super().__init__()
        self.reports = 0

    async def record_worker(
        self, name: str, *, at: datetime, details: JsonObject, stopped: bool = False
    ) -> None:
        self.reports += 1
        raise BackendUnavailableError("the store is down")


async def test_a_worker_whose_reports_fail_keeps_working(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="squidmesh.runtime")
    store = UnreachableReports()
    runtime = Runtime(store=store, workflows=[QUICK], settings=FAST)
    async with runtime:
        run = (await runtime.start_run("ops.quick", {})).unwrap()
        done = (await runtime.wait_for(run.id, timeout=timedelta(seconds=5))).unwrap()
        await asyncio.sleep(0.15)
    assert done.status is RunStatus.COMPLETED
    assert store.reports >= 3  # the start, a heartbeat or more, the stop
    lost = [r for r in caplog.records if "worker reports" in r.getMessage()]
    assert len(lost) == 1  # one line for the whole outage


async def test_two_workers_in_one_process_with_the_default_name_have_a_row_each() -> None:
    store = MemoryRunStore()
    fast = RuntimeSettings(
        poll_interval=timedelta(milliseconds=20),
        lease=timedelta(seconds=1),
        heartbeat_every=timedelta(milliseconds=50),
    )
    name = default_owner()
    first = Runtime(store=store, workflows=[QUICK], settings=fast)
    second = Runtime(store=store, workflows=[QUICK], settings=fast)
    async with first:
        async with second:
            seen = {w.name: w.stopped_at for w in (await first.store_status()).workers}
            assert seen == {name: None, f"{name}#2": None}
        [(gone, at)] = [
            (w.name, w.stopped_at) for w in (await first.store_status()).workers if w.stopped_at
        ]
        assert gone == f"{name}#2" and at is not None
        again = Runtime(store=store, workflows=[QUICK], settings=fast)
        async with again:  # the number is free again
            assert {w.name for w in (await again.store_status()).workers if not w.stopped_at} == {
                name,
                f"{name}#2",
            }
    assert all(w.stopped_at is not None for w in (await first.store_status()).workers)


class SlowStopReports(MemoryRunStore):
    """A store that hangs on a stop report, as PostgreSQL does while it retries an outage."""

    async def record_worker(
        self, name: str, *, at: datetime, details: JsonObject, stopped: bool = False
    ) -> None:
        if stopped:
            await asyncio.sleep(60)
        await super().record_worker(name, at=at, details=details, stopped=stopped)


async def test_the_stop_report_gives_up_after_a_short_bound(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="squidmesh.runtime")
    store = SlowStopReports()
    presence = Presence(
        store=store,
        clock=FakeClock(T0),
        name="w",
        every=60,
        details={},
        shared=True,
        stop_within=0.2,
    )
    assert await presence.started()
    started = asyncio.get_running_loop().time()
    assert not await presence.stopped()
    assert asyncio.get_running_loop().time() - started < 1
    assert [r.getMessage() for r in caplog.records] == [
        "worker w: its stop was not recorded within 0.2 s (the store is slow or down);"
        " its row will show it as last seen before"
    ]
    assert _claim("w") == "w"  # the name was given back
    _release("w")
