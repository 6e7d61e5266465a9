"""Distributed execution through Taskiq: ``TaskiqExecutor``, broker set-up and the worker."""

from squidmesh_backends.taskiq.brokers import (
    SquidMeshStreamBroker,
    open_broker,
    redis_stream_broker,
)
from squidmesh_backends.taskiq.executor import TASK_NAME, TaskiqExecutor

__all__ = [
    "TASK_NAME",
    "SquidMeshStreamBroker",
    "TaskiqExecutor",
    "open_broker",
    "redis_stream_broker",
]
