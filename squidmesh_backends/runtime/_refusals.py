"""Refused deliveries: one bounded log line, a count and an event each, never a traceback.

A worker refuses what it cannot trust: a broker message that is not one
SquidMesh published (oversized, unparseable, wrong task or arguments, forged
ids or tokens) and a delivery whose lease is no longer held (stale or
duplicated). Neither is a fault of the worker, so neither logs a traceback or
an ERROR; both stay visible.

Rules:

1. **Malformed messages** (``Refusals.malformed``): one WARNING line naming the
   reason code and at most :data:`PREVIEW` escaped characters of what came in,
   the probe's ``REFUSED`` count, and a ``delivery.refused`` event (its run id
   is the message's when the job id names one, else empty).
2. **Stale deliveries** (``Refusals.stale``): one INFO line and the probe's
   ``STALE`` count. Duplicates are normal under at-least-once delivery, so
   they publish no event.
3. Reason codes are stable (:class:`~squidmesh_core.ports.RefusalReason`);
   the line, the count's detail and the event all carry the same one.
"""

from __future__ import annotations

import reprlib

from squidmesh_backends.logs import get_logger
from squidmesh_backends.probe import NO_PROBE, REFUSED, STALE, Probe
from squidmesh_backends.runtime._ledger import Publisher
from squidmesh_core.commands import Emit, Topic
from squidmesh_core.ids import RunId, parse_job_id
from squidmesh_core.ports import RefusalReason

LOG = get_logger("squidmesh.worker")

PREVIEW = 120
"""Most characters of a refused message that reach the log and the event."""


_preview_repr = reprlib.Repr()
_preview_repr.maxstring = PREVIEW
_preview_repr.maxother = PREVIEW
_preview_repr.maxlist = 4
_preview_repr.maxdict = 4


def preview(value: object) -> str:
    """``value`` escaped and cut to about :data:`PREVIEW` characters, in time bounded by that."""
    if isinstance(value, bytes | bytearray | memoryview):
        head = bytes(value[: PREVIEW + 1])
        text = repr(head[:PREVIEW]) + ("..." if len(value) > PREVIEW else "")
    elif isinstance(value, str):
        text = repr(value[:PREVIEW]) + ("..." if len(value) > PREVIEW else "")
    else:
        text = _preview_repr.repr(value)
    return text[: PREVIEW + 8]


class Refusals:
    """Reports refused deliveries (see the module rules)."""

    def __init__(self, *, publisher: Publisher, probe: Probe = NO_PROBE) -> None:
        self.publisher = publisher
        self.probe = probe

    def malformed(self, reason: RefusalReason, received: object, *, job_id: object = None) -> None:
        """Rule 1: a message that is not one SquidMesh published."""
        shown = preview(received)
        LOG.warning("refused a malformed message (%s): %s", reason.value, shown)
        self.probe.record(REFUSED, detail=reason.value)
        key = parse_job_id(job_id).value_or(None)
        self.publisher.publish(
            Emit(
                topic=Topic.DELIVERY_REFUSED,
                run_id=key.run_id if key is not None else RunId(""),
                workflow="",
                step=key.step if key is not None else None,
                attempt=key.attempt if key is not None else None,
                attributes={"reason": reason.value, "received": shown},
            )
        )

    def stale(self, job_id: str, why: str) -> None:
        """Rule 2: a delivery whose lease is no longer held."""
        LOG.info("refused a delivery of %s: %s", job_id, why)
        self.probe.record(STALE, detail=job_id)
