"""Entries a stranger might write to SquidMesh's stream, and the refusal each must get.

One catalogue for the test suite (``tests/taskiq/test_hostile_traffic.py``) and
the fault experiments: each entry is the stream fields written with ``XADD``
and the :class:`~squidmesh_core.ports.RefusalReason` code a worker must refuse
it with.
"""

from __future__ import annotations

import json

from squidmesh_backends.taskiq.executor import TASK_NAME

RUN = "0b0e6c1e-2f2e-4c1a-9d55-7b1d2f0e9a10"
"""A well-formed run id no store holds."""


def message(*args: object, task: str = TASK_NAME, **extra: object) -> bytes:
    """A Taskiq message as the JSON formatter writes it, with ``extra`` fields replaced."""
    body: dict[str, object] = {
        "task_id": "x",
        "task_name": task,
        "labels": {},
        "labels_types": None,
        "args": list(args),
        "kwargs": {},
    }
    body.update(extra)
    return json.dumps(body).encode()


JOB = f"{RUN}/a/1"

HOSTILE: dict[str, tuple[dict[bytes, bytes], str]] = {
    "no data field": ({b"other": b"x"}, "no_data"),
    "empty data": ({b"data": b""}, "no_data"),
    "8 MiB": ({b"data": b"A" * (8 * 1024 * 1024)}, "oversized"),
    "4 KiB and one": ({b"data": message("a" * 4097)}, "oversized"),
    "binary": ({b"data": b"\xff\xfe\x00garbage"}, "unparseable"),
    "a JSON list": ({b"data": b"[1, 2]"}, "unparseable"),
    "an empty object": ({b"data": b"{}"}, "unparseable"),
    "wrong field types": ({b"data": message(task_id=[1], labels=7)}, "unparseable"),
    "deep nesting": ({b"data": b"[" * 1500 + b"]" * 1500}, "unparseable"),
    "NUL bytes": ({b"data": b'{"task_id":"\x00"}'}, "unparseable"),
    "another task": ({b"data": message(JOB, "t", task="other.task")}, "unknown_task"),
    "bad ack_type": ({b"data": message(JOB, "t", labels={"ack_type": "x"})}, "bad_labels"),
    "valid ack_type": (
        {b"data": message(JOB, "t", labels={"ack_type": "when_received"})},
        "bad_labels",
    ),
    "no arguments": ({b"data": message()}, "bad_arguments"),
    "one argument": ({b"data": message(JOB)}, "bad_arguments"),
    "three arguments": ({b"data": message(JOB, "t", "u")}, "bad_arguments"),
    "numbers": ({b"data": message(1, 2)}, "bad_arguments"),
    "nulls": ({b"data": message(None, None)}, "bad_arguments"),
    "keyword arguments": ({b"data": message(kwargs={"job_id": JOB})}, "bad_arguments"),
    "malformed job id": ({b"data": message("nope", "t")}, "invalid_job_id"),
    "NUL in job id": ({b"data": message(f"{RUN}/a\x00/1", "t")}, "invalid_job_id"),
    "NUL in token": ({b"data": message(JOB, "t\x00")}, "invalid_lease_token"),
    "lone surrogate token": (
        {b"data": message(JOB, "zz-token").replace(b"zz-token", b"\\ud800")},
        "invalid_lease_token",
    ),
    "long token": ({b"data": message(JOB, "t" * 1000)}, "invalid_lease_token"),
    "unknown run": ({b"data": message(JOB, "t-1")}, "unknown_run"),
}
