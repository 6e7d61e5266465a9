"""The runtime ``squidmesh smoke --broker ...`` starts in a separate worker process.

``squidmesh worker --app squidmesh_backends.cli.smoke_app:runtime`` reads the
store, broker URL and stream name the smoke command passes in its environment
(``SQUIDMESH_SMOKE_STORE``, ``SQUIDMESH_SMOKE_BROKER``, ``SQUIDMESH_SMOKE_QUEUE``).
"""

from __future__ import annotations

import os
from datetime import timedelta

from squidmesh_backends.examples.order_approval import ORDER_APPROVAL
from squidmesh_backends.examples.order_saga import ORDER_SAGA
from squidmesh_backends.examples.payment_recovery import payment_recovery
from squidmesh_backends.runtime import Runtime, RuntimeSettings, compose
from squidmesh_backends.taskiq import redis_stream_broker

SETTINGS = RuntimeSettings(
    poll_interval=timedelta(milliseconds=200),
    lease=timedelta(seconds=15),
    heartbeat_every=timedelta(seconds=5),
    shutdown_timeout=timedelta(seconds=5),
)


def runtime() -> Runtime:
    url = os.environ["SQUIDMESH_SMOKE_BROKER"]
    queue = os.environ.get("SQUIDMESH_SMOKE_QUEUE", "squidmesh_smoke")
    broker = redis_stream_broker(url, lease=SETTINGS.lease, queue=queue)
    return compose(
        workflows=[payment_recovery, ORDER_APPROVAL, ORDER_SAGA],
        store=os.environ["SQUIDMESH_SMOKE_STORE"],
        broker=broker,
        settings=SETTINGS,
    )
