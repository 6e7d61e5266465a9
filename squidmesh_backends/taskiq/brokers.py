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

import re
from collections.abc import AsyncGenerator, Awaitable, Callable
from datetime import timedelta
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from taskiq import AckableMessage, AsyncBroker, InMemoryBroker
from taskiq_redis import RedisStreamBroker

from squidmesh_backends.errors import BackendUnavailableError, ConfigurationError
from squidmesh_backends.outage import describe

QUEUE = "squidmesh"
GROUP = "squidmesh"
NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""What a namespace may look like: it becomes part of Redis key names."""


class SquidMeshStreamBroker(RedisStreamBroker):
    """A ``RedisStreamBroker`` whose reads never stall on an entry they cannot use.

    Every entry read from the stream is handed on as a message, acknowledged
    only by whoever handles it: an entry without a ``data`` field comes out
    with empty data (so the receiver refuses and acknowledges it instead of the
    read failing on it, which left it pending forever). Entries left pending by
    a consumer that died are taken over (``XAUTOCLAIM``) when a read finds
    nothing new, after ``idle_timeout``.
    """

    def _acknowledge(
        self, stream: bytes | str, entry: bytes | str
    ) -> Callable[[], Awaitable[None]]:
        async def ack() -> None:
            async with Redis(connection_pool=self.connection_pool) as conn:
                await conn.xack(stream, self.consumer_group_name, entry)

        return ack

    def _message(self, stream: bytes | str, entry: bytes | str, fields: Any) -> AckableMessage:
        data = fields.get(b"data", b"") if isinstance(fields, dict) else b""
        return AckableMessage(
            data=data if isinstance(data, bytes) else b"",
            ack=self._acknowledge(stream, entry),
        )

    async def listen(self) -> AsyncGenerator[AckableMessage, None]:
        """Entries of the stream, new ones first; abandoned ones when nothing is new.

        Raises:
            BackendUnavailableError: Redis cannot be read (the receive loop
                reports the outage once and reads again when it is back).
        """
        try:
            async with Redis(connection_pool=self.connection_pool) as conn:
                while True:
                    fetched: Any = await conn.xreadgroup(
                        self.consumer_group_name,
                        self.consumer_name,
                        {self.queue_name: ">"},
                        block=self.block,
                        count=self.count,
                    )
                    for stream, entries in fetched or ():
                        for entry, fields in entries:
                            yield self._message(stream, entry, fields)
                    if fetched:
                        continue
                    taken: Any = await conn.xautoclaim(
                        self.queue_name,
                        self.consumer_group_name,
                        self.consumer_name,
                        min_idle_time=self.idle_timeout,
                        count=self.count or 1,
                    )
                    for entry, fields in taken[1]:
                        yield self._message(self.queue_name, entry, fields)
        except (RedisError, OSError) as exc:
            raise BackendUnavailableError(f"cannot read from Redis ({describe(exc)})") from exc


def redis_stream_broker(
    url: str,
    *,
    lease: timedelta,
    queue: str = QUEUE,
    group: str | None = None,
    maxlen: int = 100_000,
    broker_class: type[RedisStreamBroker] = SquidMeshStreamBroker,
) -> RedisStreamBroker:
    """A Redis streams broker set up for SquidMesh (a :class:`SquidMeshStreamBroker`).

    * ``queue`` names the stream and ``group`` its consumer group (default
      ``squidmesh``): runtimes that share a Redis database need a stream each
      (see :func:`namespaced_queue`), or they take each other's messages.
    * ``socket_connect_timeout`` of three seconds: an unreachable Redis is
      reported at once instead of hanging a worker's start.

    * ``consumer_id="0"``: the consumer group starts at the beginning of the
      stream, so a message published before any worker created the group is
      still delivered (with ``"$"`` it would be skipped).
    * ``maxlen`` (approximate) bounds the stream: acknowledged entries are not
      deleted by ``XACK``.
    * ``idle_timeout`` is ten leases (at least ten minutes): Redis redelivery is
      only a backstop. The store's lease expiry is what re-publishes a job whose
      worker died, well before Redis would.
    * ``xread_count=1``: a worker takes one message per read, and reads only
      when it has a free slot, so it never hoards messages in its pending list
      that idle workers could run.
    """
    idle = max(timedelta(minutes=10), lease * 10)
    return broker_class(
        url,
        queue_name=queue,
        consumer_group_name=group or GROUP,
        consumer_id="0",
        maxlen=maxlen,
        approximate=True,
        idle_timeout=int(idle.total_seconds() * 1000),
        xread_block=1000,
        xread_count=1,
        socket_connect_timeout=3,
    )


def namespaced_queue(namespace: str) -> str:
    """The stream (and consumer group) of a namespace: ``squidmesh.<namespace>``.

    Raises:
        ConfigurationError: the namespace is empty, too long, or not made of
            letters, digits, ``.``, ``_`` and ``-``.
    """
    if not NAMESPACE.fullmatch(namespace):
        raise ConfigurationError(
            f"namespace {namespace!r} must be 1-64 letters, digits, '.', '_' or '-'"
            " (starting with a letter or digit)"
        )
    return f"{QUEUE}.{namespace}"


def describe_broker(broker: AsyncBroker) -> str:
    """Where a broker is, for people: ``Redis at 127.0.0.1:6379/0 (stream squidmesh.x)``.

    Credentials are never shown.
    """
    if isinstance(broker, RedisStreamBroker):
        kwargs = broker.connection_pool.connection_kwargs
        where = kwargs.get("path") or f"{kwargs.get('host', '?')}:{kwargs.get('port', 6379)}"
        return f"Redis at {where}/{kwargs.get('db', 0)} (stream {broker.queue_name})"
    return type(broker).__name__


async def reach_broker(broker: AsyncBroker) -> None:
    """Check that the broker answers (a Redis ``PING``); other brokers are trusted.

    Raises:
        BackendUnavailableError: the broker cannot be reached, naming where it is.
    """
    if not isinstance(broker, RedisStreamBroker):
        return
    try:
        async with Redis(connection_pool=broker.connection_pool) as conn:
            await conn.ping()
    except (RedisError, OSError) as exc:
        raise BackendUnavailableError(
            f"cannot reach {describe_broker(broker)}: {describe(exc)}"
        ) from exc


def open_broker(spec: str, *, lease: timedelta, namespace: str | None = None) -> AsyncBroker:
    """A broker from its name: ``memory`` (in-process, for tests) or ``redis://...``.

    A Redis broker reads and writes the namespace's stream (:func:`namespaced_queue`),
    or ``squidmesh`` without one.

    Raises:
        ConfigurationError: any other name.
    """
    if spec == "memory":
        return InMemoryBroker()
    if spec.startswith(("redis://", "rediss://", "unix://")):
        if namespace is None:
            return redis_stream_broker(spec, lease=lease)
        queue = namespaced_queue(namespace)
        return redis_stream_broker(spec, lease=lease, queue=queue, group=queue)
    raise ConfigurationError(f"unknown broker {spec!r} (use 'memory' or 'redis://...')")
