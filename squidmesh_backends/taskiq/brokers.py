"""Brokers SquidMesh sets up for itself, configured for the store-is-the-truth model.

Only acknowledged, redelivering brokers are safe as the production transport.
``RedisStreamBroker`` acknowledges a message after the task returns, so a worker
killed mid-step leaves it pending. ``ListQueueBroker`` is *not* used: its
``BRPOP`` removes the message before the step runs, so a crash loses it (the
store would still re-publish the job after its lease expires, so no run is lost,
but every crash would cost a full lease of latency and the broker would give no
signal at all). Either way SquidMesh never relies on the broker for timing or
retries: those are decisions persisted in the store.
"""

from __future__ import annotations

from datetime import timedelta

from taskiq import AsyncBroker, InMemoryBroker
from taskiq_redis import RedisStreamBroker

from squidmesh_backends.errors import ConfigurationError

QUEUE = "squidmesh"
GROUP = "squidmesh"


def redis_stream_broker(
    url: str,
    *,
    lease: timedelta,
    queue: str = QUEUE,
    maxlen: int = 100_000,
    broker_class: type[RedisStreamBroker] = RedisStreamBroker,
) -> RedisStreamBroker:
    """A ``RedisStreamBroker`` set up for SquidMesh.

    * ``consumer_id="0"``: the consumer group starts at the beginning of the
      stream, so a message published before any worker created the group is
      still delivered (with ``"$"`` it would be skipped).
    * ``maxlen`` (approximate) bounds the stream: acknowledged entries are not
      deleted by ``XACK``.
    * ``idle_timeout`` is ten leases (at least ten minutes): Redis redelivery is
      only a backstop. The store's lease expiry is what re-publishes a job whose
      worker died, well before Redis would.
    * ``xread_count=1``: a worker takes one message per read, so it does not
      hoard messages in its pending list that idle workers could run.
    """
    idle = max(timedelta(minutes=10), lease * 10)
    return broker_class(
        url,
        queue_name=queue,
        consumer_group_name=GROUP,
        consumer_id="0",
        maxlen=maxlen,
        approximate=True,
        idle_timeout=int(idle.total_seconds() * 1000),
        xread_block=1000,
        xread_count=1,
    )


def open_broker(spec: str, *, lease: timedelta) -> AsyncBroker:
    """A broker from its name: ``memory`` (in-process, for tests) or ``redis://...``.

    Raises:
        ConfigurationError: any other name.
    """
    if spec == "memory":
        return InMemoryBroker()
    if spec.startswith(("redis://", "rediss://", "unix://")):
        return redis_stream_broker(spec, lease=lease)
    raise ConfigurationError(f"unknown broker {spec!r} (use 'memory' or 'redis://...')")
