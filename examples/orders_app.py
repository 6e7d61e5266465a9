"""A host application whose orders wait for a reviewer and for the warehouse.

The order example (``squidmesh_backends.examples.order_approval``) on the
embedded SQLite store, for the operator examples in docs/operations.md::

    squidmesh run start --app examples.orders_app:runtime examples.order_approval \
        '{"order_id": "o-1", "amount": 20}' --wait
"""

from __future__ import annotations

import os
from datetime import timedelta

from squidmesh_backends import RuntimeSettings, compose
from squidmesh_backends.examples.order_approval import ORDER_APPROVAL

runtime = compose(
    workflows=[ORDER_APPROVAL],
    store="sqlite:" + os.environ.get("SQUIDMESH_EXAMPLE_DB", "squidmesh-example.db"),
    settings=RuntimeSettings(poll_interval=timedelta(milliseconds=100)),
)
