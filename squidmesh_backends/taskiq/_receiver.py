"""What a Taskiq worker does with the broker: read when a slot is free, open, refuse, recover.

SquidMesh reads the broker itself instead of through Taskiq's receiver, so that
nothing a stranger can write to the stream reaches a log as a traceback or an
8 MiB line, and nothing stays pending forever. Rules:

1. **Read only with a free slot.** The next message is read once a handler slot
   is free, so a worker never takes work it cannot start (and another worker
   could).
2. **Open strictly** (:func:`open_envelope`). A message is what
   ``TaskiqExecutor.submit`` publishes or it is refused, with a reason from
   :class:`~squidmesh_core.ports.RefusalReason`: at most
   :data:`MAX_MESSAGE_BYTES` (larger ones are not parsed), readable by the
   broker's formatter, for SquidMesh's task, without an ``ack_type`` label,
   with exactly two positional strings. The two strings are checked by the
   handler (``parse_job_message``).
3. **Acknowledge every message once handled**: after the handler returned (its
   outcome is committed), or at once when refused. A message whose handler
   did not return (it failed on a store outage, the worker stopped or died)
   stays pending; Redis offers it again after the broker's idle timeout, when
   it is stale (the store has re-published the job once its lease expired).
4. **One line per outage** (:class:`~squidmesh_backends.outage.Outage`): a
   broker that fails is reported once when lost and once when back, without a
   traceback, and retried after a pause that grows and starts over after a
   healthy period.
5. **A read ends for sure when cancelled** (:func:`cancellable_listen`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from returns.result import Failure, Result, Success
from taskiq import AsyncBroker
from taskiq.abc.formatter import TaskiqFormatter

from squidmesh_backends.logs import get_logger
from squidmesh_core.ports import RefusalReason

LOG = get_logger("squidmesh.taskiq")

MAX_MESSAGE_BYTES = 4096
"""Largest message read (SquidMesh's own are about 300 bytes)."""
RECANCEL_EVERY = 0.05
"""Seconds between cancellations of a broker read that has not ended yet."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Refusal:
    """Why a message was refused, what came in, and the job id it named (if any)."""

    reason: RefusalReason
    received: object
    job_id: object = None


Opened = Result[tuple[str, str], Refusal]
"""The two strings of a message, or its refusal."""


def open_envelope(raw: object, *, formatter: TaskiqFormatter, task_name: str) -> Opened:
    """Rule 2: the ``(job_id, lease_token)`` a message carries, or why it is refused."""
    if not isinstance(raw, bytes | bytearray) or not raw:
        return Failure(Refusal(reason=RefusalReason.NO_DATA, received=raw))
    if len(raw) > MAX_MESSAGE_BYTES:
        return Failure(Refusal(reason=RefusalReason.OVERSIZED, received=raw))
    try:
        message = formatter.loads(message=bytes(raw))
    except Exception:  # whatever the format's parser raises: the message is not ours
        return Failure(Refusal(reason=RefusalReason.UNPARSEABLE, received=raw))
    args: list[Any] = message.args
    job_id = args[0] if args else None
    if message.task_name != task_name:
        return Failure(Refusal(reason=RefusalReason.UNKNOWN_TASK, received=message.task_name))
    if "ack_type" in message.labels:
        return Failure(
            Refusal(reason=RefusalReason.BAD_LABELS, received=message.labels, job_id=job_id)
        )
    if message.kwargs or len(args) != 2 or not all(isinstance(a, str) for a in args):
        return Failure(
            Refusal(
                reason=RefusalReason.BAD_ARGUMENTS,
                received=[args, message.kwargs],
                job_id=job_id,
            )
        )
    return Success((args[0], args[1]))


async def _cancel_until_done(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` again and again until it has ended.

    One cancellation can be lost: on Python 3.11 ``asyncio.wait_for`` returns
    the inner result and drops the cancellation when both happen at once, and
    redis-py sends every command through it. A Redis read that lost its
    cancellation blocks, reads again, and never ends.
    """
    while not task.done():
        task.cancel()
        try:
            await asyncio.wait({task}, timeout=RECANCEL_EVERY)
        except asyncio.CancelledError:
            continue  # the caller re-raises once the read has ended
    if not task.cancelled():
        task.exception()  # retrieved: a read that failed while cancelled is not reported again


async def cancellable_listen(broker: AsyncBroker) -> AsyncGenerator[Any, None]:
    """Rule 5: ``broker.listen()``, each read in a task of its own, cancelled until it ends."""
    source = broker.listen()

    async def next_message() -> Any:
        return await anext(source)

    try:
        while True:
            read = asyncio.create_task(next_message(), name="squidmesh-taskiq-read")
            try:
                await asyncio.wait({read})
            except asyncio.CancelledError:
                await _cancel_until_done(read)
                raise
            try:
                message = read.result()
            except StopAsyncIteration:
                return
            yield message
    finally:
        try:
            await source.aclose()
        except Exception as exc:  # the connection is gone already: nothing left to close
            LOG.debug("closing the broker's reads failed: %s", exc)
