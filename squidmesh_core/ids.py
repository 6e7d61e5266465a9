"""Identifiers: typed strings minted by the shell and checked by the core.

The core never creates a random id. Run ids come in as arguments (the shell's
``IdSource`` mints them as UUID strings). Job ids are *derived*: a job is the
delivery of one attempt of one step of one run, so its id is
``"<run id>/<step>/<attempt>"``. Deriving it makes scheduling idempotent (the
same decision always names the same job) and lets any forged or malformed id in
a broker message be rejected by parsing alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NewType

from returns.result import Failure, Result, Success

from squidmesh_core.errors import InvalidJobId, InvalidRunId

RunId = NewType("RunId", str)
JobId = NewType("JobId", str)
LeaseToken = NewType("LeaseToken", str)
IdempotencyKey = NewType("IdempotencyKey", str)

_UUID = re.compile(r"\A[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
NAME_PATTERN = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]{0,99}\Z")
"""Step and trigger names: identifiers of at most 100 characters."""

_MAX_ATTEMPT_DIGITS = 6


def parse_run_id(value: object) -> Result[RunId, InvalidRunId]:
    """Accept a canonical lower-case UUID string as a run id.

    >>> parse_run_id("0b0e6c1e-2f2e-4c1a-9d55-7b1d2f0e9a10").unwrap()
    '0b0e6c1e-2f2e-4c1a-9d55-7b1d2f0e9a10'
    >>> parse_run_id("nope").failure().code
    'invalid_run_id'
    """
    if isinstance(value, str) and _UUID.match(value):
        return Success(RunId(value))
    return Failure(InvalidRunId(value=_preview(value)))


@dataclass(frozen=True, slots=True, kw_only=True)
class JobKey:
    """The parts a job id is made of."""

    run_id: RunId
    step: str
    attempt: int


def job_id_for(run_id: RunId, step: str, attempt: int) -> JobId:
    """Derive the id of the job that delivers ``attempt`` of ``step`` in ``run_id``."""
    return JobId(f"{run_id}/{step}/{attempt}")


def parse_job_id(value: object) -> Result[JobKey, InvalidJobId]:
    """Split a job id into its parts, rejecting anything malformed.

    >>> parse_job_id("0b0e6c1e-2f2e-4c1a-9d55-7b1d2f0e9a10/charge/2").unwrap().attempt
    2
    """
    if not isinstance(value, str):
        return Failure(InvalidJobId(value=_preview(value)))
    parts = value.split("/")
    if len(parts) != 3:
        return Failure(InvalidJobId(value=_preview(value)))
    run_part, step, attempt = parts
    if (
        not _UUID.match(run_part)
        or not NAME_PATTERN.match(step)
        or not attempt.isdigit()
        or not attempt.isascii()
        or len(attempt) > _MAX_ATTEMPT_DIGITS
        or attempt.startswith("0")
    ):
        return Failure(InvalidJobId(value=_preview(value)))
    return Success(JobKey(run_id=RunId(run_part), step=step, attempt=int(attempt)))


def _preview(value: object) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
