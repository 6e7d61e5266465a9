"""``OpenTelemetrySink``: spans and metrics from the runtime's events (the ``otel`` extra).

Install ``squidmesh[otel]`` (``opentelemetry-api``) and pass the sink to the
runtime (``compose(..., sinks=[OpenTelemetrySink()])``); it uses the global
tracer and meter providers unless given others. What it records:

* a span per run (``squidmesh.run <workflow>``), from ``run.created`` or
  ``run.replayed`` to the transition into a final status (error status if the
  run failed), recorded by a process that saw both, and linked to the attempt
  spans recorded there;
* a span per step attempt (``squidmesh.step <step>``), from ``step.started`` to
  ``step.completed`` / ``step.failed`` / ``step.cancelled``, with an error
  status, a ``failure`` event when it failed and a ``retry_scheduled`` event
  when another attempt follows; an attempt nobody finishes in this process
  (its worker was lost, its outcome discarded) is ended after ``abandon_after``
  with ``squidmesh.abandoned`` set;
* ``retry_scheduled`` and ``lease_reclaimed`` span events on the run span;
* metrics: ``squidmesh.step.duration`` (ms, by workflow, step and outcome),
  ``squidmesh.step.retries`` (count) and ``squidmesh.queue.lateness`` (ms from
  a job's due time to its start).

Every span of a run belongs to the trace whose id is the run id (a UUID is 128
bits, like a trace id), so spans recorded by different workers line up in one
trace without passing context through the broker. They are children of a
remote parent derived from the run id that is never recorded itself (viewers
show it as a missing root), flagged sampled: a parent-based sampler records
them all. Memory is bounded: at most ``max_open`` runs and attempts are tracked.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    Status,
    StatusCode,
    TraceFlags,
)

from squidmesh_core.commands import Emit, Topic
from squidmesh_core.state import RunStatus

FINAL = frozenset(status.value for status in RunStatus if status.terminal)
"""The run statuses a run span ends at: those ``RunStatus.terminal`` names."""
MAX_LINKS = 128
"""Most attempt spans one run span links to."""


def run_trace_context(run_id: str) -> Context:
    """A remote parent in the trace whose id is ``run_id``: every worker derives the same one."""
    digest = hashlib.sha256(run_id.encode()).digest()
    try:
        trace_id = uuid.UUID(run_id).int or 1
    except ValueError:  # hand-made events: still one stable trace per run id
        trace_id = int.from_bytes(digest[8:24], "big") or 1
    span_id = int.from_bytes(digest[:8], "big") or 1
    parent = SpanContext(
        trace_id=trace_id,
        span_id=span_id,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    return trace.set_span_in_context(NonRecordingSpan(parent))


class OpenTelemetrySink:
    """An ``EventSink`` that records spans and metrics (see the module docs)."""

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        max_open: int = 10_000,
        abandon_after: timedelta = timedelta(hours=1),
    ) -> None:
        self.tracer = trace.get_tracer("squidmesh", tracer_provider=tracer_provider)
        meter = metrics.get_meter("squidmesh", meter_provider=meter_provider)
        self.step_duration = meter.create_histogram(
            "squidmesh.step.duration", unit="ms", description="Step attempt duration"
        )
        self.retries = meter.create_counter(
            "squidmesh.step.retries", description="Retries scheduled after failed attempts"
        )
        self.lateness = meter.create_histogram(
            "squidmesh.queue.lateness", unit="ms", description="From a job's due time to its start"
        )
        self.max_open = max_open
        self.abandon_after = abandon_after
        self._runs: OrderedDict[str, tuple[int, dict[str, Any]]] = OrderedDict()
        """Runs seen starting here: start time (ns) and attributes; the span is recorded
        when the run finishes in this process, or dropped (bounded by ``max_open``)."""
        self._run_events: dict[str, list[tuple[str, dict[str, Any], int]]] = {}
        self._attempts: dict[str, list[SpanContext]] = {}
        self._steps: OrderedDict[tuple[str, str, int], tuple[Span, float]] = OrderedDict()
        self._failed: dict[tuple[str, str], Span] = {}
        """Failed attempts' spans, left open for the retry event of the same decision."""

    def publish(self, event: Emit) -> None:
        if event.topic not in (
            Topic.STEP_RETRY_SCHEDULED,
            Topic.LEASE_RECLAIMED,
            Topic.DELIVERY_REFUSED,  # says nothing about the run it names
        ):
            self._close_failed(event.run_id)
        handler = _HANDLERS.get(event.topic)
        if handler is not None:
            handler(self, event)
        self._sweep()

    def _sweep(self) -> None:
        """End attempt spans nobody will finish here (worker lost, outcome discarded)."""
        horizon = time.monotonic() - self.abandon_after.total_seconds()
        while self._steps:
            key, (span, opened) = next(iter(self._steps.items()))
            if opened > horizon and len(self._steps) <= self.max_open:
                break
            del self._steps[key]
            span.set_attribute("squidmesh.abandoned", True)
            span.end()
        while len(self._runs) > self.max_open:
            run_id, _ = self._runs.popitem(last=False)
            self._run_events.pop(run_id, None)
            self._attempts.pop(run_id, None)

    def _close_failed(self, run_id: str) -> None:
        for key in [k for k in self._failed if k[0] == run_id]:
            self._failed.pop(key).end()

    # ---------------------------------------------------------------- runs

    def _run_started(self, event: Emit) -> None:
        self._runs[event.run_id] = (
            time.time_ns(),
            {
                "squidmesh.run_id": event.run_id,
                "squidmesh.workflow": event.workflow,
                "squidmesh.trigger": str(event.attributes.get("trigger", "")),
            },
        )

    def _run_transition(self, event: Emit) -> None:
        target = event.attributes.get("to")
        if not isinstance(target, str) or target not in FINAL:
            return
        for key in [k for k in self._steps if k[0] == event.run_id]:
            self._steps.pop(key)[0].end()
        started = self._runs.pop(event.run_id, None)
        events = self._run_events.pop(event.run_id, [])
        attempts = self._attempts.pop(event.run_id, [])
        if started is None:
            return
        start_ns, attributes = started
        span = self.tracer.start_span(
            f"squidmesh.run {event.workflow}",
            context=run_trace_context(event.run_id),
            attributes={**attributes, "squidmesh.status": str(target)},
            links=[Link(context) for context in attempts],
            start_time=start_ns,
        )
        for name, attrs, at in events:
            span.add_event(name, attributes=attrs, timestamp=at)
        if target in ("failed", "compensation_failed"):
            span.set_status(Status(StatusCode.ERROR, f"the run ended {target}"))
        span.end()

    def _run_event(self, event: Emit, name: str) -> None:
        if event.run_id in self._runs:
            self._run_events.setdefault(event.run_id, []).append(
                (name, _flat(event), time.time_ns())
            )

    # ---------------------------------------------------------------- steps

    def _step_started(self, event: Emit) -> None:
        attrs = _labels(event)
        span = self.tracer.start_span(
            f"squidmesh.step {event.step}",
            context=run_trace_context(event.run_id),
            attributes={
                **attrs,
                "squidmesh.run_id": event.run_id,
                "squidmesh.attempt": event.attempt or 0,
            },
        )
        self._steps[(event.run_id, event.step or "", event.attempt or 0)] = (span, time.monotonic())
        if event.run_id in self._runs:  # the run's span will be recorded here: link the attempt
            linked = self._attempts.setdefault(event.run_id, [])
            if len(linked) < MAX_LINKS:
                linked.append(span.get_span_context())
        lateness = event.attributes.get("lateness_ms")
        if isinstance(lateness, int | float):
            self.lateness.record(max(float(lateness), 0.0), attributes=attrs)

    def _step_finished(self, event: Emit, outcome: str) -> None:
        if event.attempt is None:  # a parked step ended: it waited, it did not run
            self._run_event(event, f"parked_step_{outcome}")
            return
        opened = self._steps.pop((event.run_id, event.step or "", event.attempt or 0), None)
        span = None if opened is None else opened[0]
        duration = event.attributes.get("duration_ms")
        if isinstance(duration, int | float):
            labels = {**_labels(event), "squidmesh.outcome": outcome}
            self.step_duration.record(float(duration), attributes=labels)
        if span is None:
            return
        if outcome == "failed":
            error = event.attributes.get("error")
            details = error if isinstance(error, dict) else {}
            message = str(details.get("message", "the step failed"))
            span.set_status(Status(StatusCode.ERROR, message))
            span.add_event(
                "failure",
                attributes={
                    "kind": str(details.get("kind", "")),
                    "message": message,
                    "retryable": bool(details.get("retryable", True)),
                },
            )
            self._failed[(event.run_id, event.step or "")] = span
            return
        if outcome == "cancelled":
            span.add_event("cancelled", attributes=_flat(event))
        span.end()

    def _retry(self, event: Emit) -> None:
        self.retries.add(1, attributes=_labels(event))
        self._run_event(event, "retry_scheduled")
        failed = self._failed.pop((event.run_id, event.step or ""), None)
        if failed is not None:
            failed.add_event("retry_scheduled", attributes=_flat(event))
            failed.end()


def _labels(event: Emit) -> dict[str, str]:
    return {"squidmesh.workflow": event.workflow, "squidmesh.step": event.step or ""}


def _flat(event: Emit) -> dict[str, Any]:
    flat: dict[str, Any] = {
        "squidmesh.step": event.step or "",
        "squidmesh.attempt": event.attempt or 0,
    }
    for key, value in event.attributes.items():
        if isinstance(value, str | int | float | bool):
            flat[key] = value
    return flat


_HANDLERS: dict[Topic, Callable[[OpenTelemetrySink, Emit], None]] = {
    Topic.RUN_CREATED: OpenTelemetrySink._run_started,
    Topic.RUN_REPLAYED: OpenTelemetrySink._run_started,
    Topic.RUN_TRANSITION: OpenTelemetrySink._run_transition,
    Topic.STEP_STARTED: OpenTelemetrySink._step_started,
    Topic.STEP_COMPLETED: lambda sink, e: sink._step_finished(e, "completed"),
    Topic.STEP_FAILED: lambda sink, e: sink._step_finished(e, "failed"),
    Topic.STEP_CANCELLED: lambda sink, e: sink._step_finished(e, "cancelled"),
    Topic.STEP_RETRY_SCHEDULED: OpenTelemetrySink._retry,
    Topic.LEASE_RECLAIMED: lambda sink, e: sink._run_event(e, "lease_reclaimed"),
    Topic.STEP_PARKED: lambda sink, e: sink._run_event(e, "step_parked"),
    Topic.SIGNAL_RECEIVED: lambda sink, e: sink._run_event(e, "signal_received"),
    Topic.COMMAND_ACCEPTED: lambda sink, e: sink._run_event(e, "command_accepted"),
}
