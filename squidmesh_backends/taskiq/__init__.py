"""Distributed execution through Taskiq: ``TaskiqExecutor``, broker set-up and the worker."""

from squidmesh_backends.taskiq.brokers import (
    SquidMeshStreamBroker,
    describe_broker,
    namespaced_queue,
    open_broker,
    reach_broker,
    redis_stream_broker,
)
from squidmesh_backends.taskiq.executor import TASK_NAME, TaskiqExecutor

__all__ = [
    "TASK_NAME",
    "SquidMeshStreamBroker",
    "TaskiqExecutor",
    "describe_broker",
    "namespaced_queue",
    "open_broker",
    "reach_broker",
    "redis_stream_broker",
]
