"""Identifiers: typed strings minted by the shell and checked by the core.

The core never creates a random id. Run ids come in as arguments (the shell's
``IdSource`` mints them as UUID strings). Job ids are *derived*: a job is the
delivery of one attempt of one step of one run, so its id is
``"<run id>/<step>/<attempt>"``. Deriving it makes scheduling idempotent (the
same decision always names the same job) and lets any forged or malformed id in
a broker message be rejected by parsing alone.

Lease tokens are opaque, but not arbitrary: an id source mints them from
:data:`LEASE_TOKEN_PATTERN` (letters, digits and ``_.:-``, at most 128), so a
token in a broker message that does not match is forged and is refused before
it reaches a store (a NUL or a lone surrogate would crash a database driver).
"""

from __future__ import annotations

import re
import reprlib
from dataclasses import dataclass
from typing import NewType

from returns.result import Failure, Result, Success

from squidmesh_core.errors import InvalidJobId, InvalidLeaseToken, InvalidRunId

RunId = NewType("RunId", str)
JobId = NewType("JobId", str)
LeaseToken = NewType("LeaseToken", str)
IdempotencyKey = NewType("IdempotencyKey", str)

_UUID = re.compile(r"\A[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
NAME_PATTERN = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]{0,99}\Z")
"""Step and trigger names: identifiers of at most 100 characters."""
_JOB_STEP = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]{0,99}(?::compensate)?\Z")
"""A job's step: a step name, or the compensation pseudo-step ``<step>:compensate``."""

LEASE_TOKEN_PATTERN = re.compile(r"\A[A-Za-z0-9_.:-]{1,128}\Z")
"""What an ``IdSource`` may mint as a lease token."""

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
        or not _JOB_STEP.match(step)
        or not attempt.isdigit()
        or not attempt.isascii()
        or len(attempt) > _MAX_ATTEMPT_DIGITS
        or attempt.startswith("0")
    ):
        return Failure(InvalidJobId(value=_preview(value)))
    return Success(JobKey(run_id=RunId(run_part), step=step, attempt=int(attempt)))


def parse_lease_token(value: object) -> Result[LeaseToken, InvalidLeaseToken]:
    """Accept a lease token an id source could have minted (``LEASE_TOKEN_PATTERN``).

    >>> parse_lease_token("9f86d081884c7d659a2feaa0c55ad015").unwrap()
    '9f86d081884c7d659a2feaa0c55ad015'
    >>> parse_lease_token("forged token").failure().code
    'invalid_lease_token'
    """
    if isinstance(value, str) and LEASE_TOKEN_PATTERN.match(value):
        return Success(LeaseToken(value))
    return Failure(InvalidLeaseToken(value=_preview(value)))


@dataclass(frozen=True, slots=True, kw_only=True)
class JobMessage:
    """What a broker message says, checked: deliver ``job_id`` under ``lease_token``."""

    job_id: JobId
    key: JobKey
    lease_token: LeaseToken


def parse_job_message(
    job_id: object, lease_token: object
) -> Result[JobMessage, InvalidJobId | InvalidLeaseToken]:
    """Check the two strings of a delivery; every executor's edge calls this first.

    >>> parse_job_message("0b0e6c1e-2f2e-4c1a-9d55-7b1d2f0e9a10/charge/1", "t-1").unwrap().key.step
    'charge'
    """
    key = parse_job_id(job_id)
    if isinstance(key, Failure):
        return Failure(key.failure())
    token = parse_lease_token(lease_token)
    if isinstance(token, Failure):
        return Failure(token.failure())
    return Success(
        JobMessage(job_id=JobId(str(job_id)), key=key.unwrap(), lease_token=token.unwrap())
    )


def _preview(value: object) -> str:
    """At most 80 printable characters of ``value`` (escaped when it holds others).

    Bounded in time and space whatever ``value`` is: only its head is looked at.
    """
    if isinstance(value, str):
        head = value[:80]
        text = head if head.isprintable() else repr(head)
        long = len(value) > 80 or len(text) > 80
    else:
        text = reprlib.repr(value)
        long = len(text) > 80
    return text[:77] + "..." if long else text
