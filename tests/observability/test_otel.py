"""OpenTelemetry spans and metrics, checked with the SDK's in-memory exporter and reader."""

from __future__ import annotations

import uuid
from datetime import timedelta

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from returns.result import Failure, Result, Success

from squidmesh_backends.observability.otel import OpenTelemetrySink
from squidmesh_backends.runtime import TimeSkippingRuntime
from squidmesh_core import (
    COMPLETE,
    Fixed,
    Retry,
    RunStatus,
    StepContext,
    StepFailure,
    chain,
    manual,
    step,
    workflow,
)


async def flaky(
    data: dict[str, object], ctx: StepContext
) -> Result[dict[str, object], StepFailure]:
    if ctx.attempt == 1:
        return Failure(StepFailure(kind="http", message="gateway answered 503"))
    return Success({"ok": True})


async def done(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    return {}


FLOW = workflow(
    "otel.flow",
    triggers=[manual()],
    steps=[
        step(
            "flaky", flaky, retry=Retry(max_attempts=3, backoff=Fixed(delay=timedelta(seconds=5)))
        ),
        step("done", done),
    ],
    transitions=chain("flaky", "done", COMPLETE),
)


async def test_runs_and_attempts_become_linked_spans_and_metrics() -> None:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    sink = OpenTelemetrySink(tracer_provider=tracer_provider, meter_provider=meter_provider)

    rt = TimeSkippingRuntime(workflows=[FLOW], sinks=[sink])
    run = (await rt.start_run(FLOW, {})).unwrap()
    assert (await rt.run_until_complete(run.id)).status is RunStatus.COMPLETED

    spans = {
        (s.name, dict(s.attributes or {}).get("squidmesh.attempt")): s
        for s in exporter.get_finished_spans()
    }
    run_span = spans[("squidmesh.run otel.flow", None)]
    failed = spans[("squidmesh.step flaky", 1)]
    retried = spans[("squidmesh.step flaky", 2)]
    final = spans[("squidmesh.step done", 1)]
    assert len(spans) == 4
    trace_id = uuid.UUID(run.id).int
    contexts = {key: s.get_span_context() for key, s in spans.items()}
    assert {c.trace_id for c in contexts.values() if c is not None} == {trace_id}
    linked = {link.context.span_id for link in run_span.links}
    for attempt_span in (failed, retried, final):
        attempt_context = attempt_span.get_span_context()
        assert attempt_context is not None and attempt_context.span_id in linked
        assert attempt_span.parent == run_span.parent  # siblings under the run's trace root
        assert attempt_span.attributes["squidmesh.run_id"] == run.id  # type: ignore[index]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "gateway answered 503"
    assert [e.name for e in failed.events] == ["failure", "retry_scheduled"]
    assert retried.status.status_code is StatusCode.UNSET
    assert [e.name for e in run_span.events] == ["retry_scheduled"]
    assert run_span.attributes["squidmesh.status"] == "completed"  # type: ignore[index]

    data = reader.get_metrics_data()
    assert data is not None
    points: dict[str, list[object]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points[metric.name] = list(metric.data.data_points)
    durations = points["squidmesh.step.duration"]
    assert sum(p.count for p in durations) == 3  # type: ignore[attr-defined]
    assert sum(p.value for p in points["squidmesh.step.retries"]) == 1  # type: ignore[attr-defined]
    assert sum(p.count for p in points["squidmesh.queue.lateness"]) == 3  # type: ignore[attr-defined]
    assert max(p.max for p in points["squidmesh.queue.lateness"]) >= 0  # type: ignore[attr-defined]


async def test_state_is_bounded_and_lost_attempts_are_ended() -> None:
    from squidmesh_core.commands import Emit, Topic
    from squidmesh_core.ids import RunId

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sink = OpenTelemetrySink(tracer_provider=provider, max_open=10, abandon_after=timedelta(0))
    for n in range(50):  # an API process: runs created here, never finished here
        run_id = RunId(str(uuid.UUID(int=n + 1)))
        sink.publish(Emit(topic=Topic.RUN_CREATED, run_id=run_id, workflow="w"))
        sink.publish(
            Emit(topic=Topic.STEP_STARTED, run_id=run_id, workflow="w", step="s", attempt=1)
        )
    assert len(sink._runs) <= 10
    assert len(sink._steps) == 0  # abandoned at once with abandon_after=0
    abandoned = [
        s for s in exporter.get_finished_spans() if (s.attributes or {}).get("squidmesh.abandoned")
    ]
    assert len(abandoned) == 50
    sink.publish(
        Emit(
            topic=Topic.STEP_STARTED, run_id=RunId("not-a-uuid"), workflow="w", step="s", attempt=1
        )
    )


def test_run_spans_end_at_exactly_the_terminal_run_statuses() -> None:
    from squidmesh_backends.observability.otel import FINAL

    assert {RunStatus(s) for s in FINAL} == {s for s in RunStatus if s.terminal}


async def test_a_run_span_ends_only_on_a_transition_into_a_terminal_status() -> None:
    from squidmesh_core.commands import Emit, Topic
    from squidmesh_core.ids import RunId

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sink = OpenTelemetrySink(tracer_provider=provider)
    run_id = RunId(str(uuid.UUID(int=7)))
    sink.publish(Emit(topic=Topic.RUN_CREATED, run_id=run_id, workflow="w"))
    for target in [RunStatus.RUNNING, "nonsense", ["completed"], None]:
        attributes = {} if target is None else {"to": target}
        sink.publish(
            Emit(topic=Topic.RUN_TRANSITION, run_id=run_id, workflow="w", attributes=attributes)
        )
    assert exporter.get_finished_spans() == ()
    sink.publish(
        Emit(
            topic=Topic.RUN_TRANSITION,
            run_id=run_id,
            workflow="w",
            attributes={"to": RunStatus.CANCELLED.value},
        )
    )
    (span,) = exporter.get_finished_spans()
    assert (span.attributes or {})["squidmesh.status"] == "cancelled"


async def test_a_parked_step_is_a_run_event_not_a_step_span() -> None:
    from squidmesh_core import approval

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    sink = OpenTelemetrySink(tracer_provider=tracer_provider, meter_provider=meter_provider)
    flow = workflow(
        "otel.reviewed",
        triggers=[manual()],
        steps=[approval("review"), step("done", done)],
        transitions=chain("review", "done", COMPLETE),
    )
    rt = TimeSkippingRuntime(workflows=[flow], sinks=[sink])
    run = (await rt.start_run(flow, {})).unwrap()
    await rt.advance(timedelta(days=2))  # two days waiting for a reviewer
    (await rt.approve_run(run.id, actor="ana")).unwrap()
    assert (await rt.run_until_complete(run.id)).status is RunStatus.COMPLETED

    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"squidmesh.run otel.reviewed", "squidmesh.step done"}
    events = [e.name for e in spans["squidmesh.run otel.reviewed"].events]
    assert events == ["step_parked", "parked_step_completed", "command_accepted"]
    data = reader.get_metrics_data()
    assert data is not None
    durations: list[HistogramDataPoint] = [
        p
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "squidmesh.step.duration"
        for p in metric.data.data_points
        if isinstance(p, HistogramDataPoint)
    ]
    assert sum(p.count for p in durations) == 1
    assert max(p.max for p in durations) < 60_000  # the attempt of "done", not the wait
