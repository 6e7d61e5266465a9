"""Retry policies and the pure retry decision.

Rules:

1. ``max_attempts`` counts *every* attempt, the first one included. A step
   without a policy gets exactly one attempt.
2. A failure marked ``retryable=False`` never retries.
3. A failure carrying ``retry_after`` is retried after exactly that delay (it wins
   over the policy's backoff, not over ``max_attempts``), capped at ``MAX_DELAY``.
4. Otherwise the delay comes from the backoff: exponential, linear or fixed,
   capped at ``max``. Jitter, when asked for, *shortens* the delay by up to a
   fraction derived from a SHA-256 of ``(run id, step, attempt)``: the same
   history always yields the same schedule, and the cap is never exceeded.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TypeAlias

ZERO = timedelta(0)
MAX_DELAY = timedelta(days=366)
"""Longest delay SquidMesh schedules: backoffs, ``retry_after`` and ``wait`` are capped here."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Exponential:
    """Delay ``min * factor**(attempt-1)``, capped at ``max``."""

    min: timedelta
    """Delay after the first failed attempt."""
    max: timedelta
    """Upper bound of any delay."""
    factor: float = 2.0
    """Growth per attempt; at least 1."""
    jitter: float = 0.0
    """Fraction in [0, 1] by which a delay may be shortened, deterministically."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Linear:
    """Delay ``min + step*(attempt-1)``, capped at ``max``."""

    min: timedelta
    """Delay after the first failed attempt."""
    step: timedelta
    """Added per further attempt."""
    max: timedelta
    """Upper bound of any delay."""
    jitter: float = 0.0
    """Fraction in [0, 1] by which a delay may be shortened, deterministically."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Fixed:
    """The same delay after every failed attempt."""

    delay: timedelta
    """Delay between attempts."""
    jitter: float = 0.0
    """Fraction in [0, 1] by which a delay may be shortened, deterministically."""


Backoff: TypeAlias = Exponential | Linear | Fixed


@dataclass(frozen=True, slots=True, kw_only=True)
class Retry:
    """How often a step may be attempted and how long to wait in between."""

    max_attempts: int
    """Total attempts, the first included (so 1 means "never retry")."""
    backoff: Backoff | None = None
    """Delay between attempts; ``None`` retries immediately."""
    retry_on: tuple[type[BaseException], ...] = ()
    """If set, only exceptions of these types are retried."""
    no_retry_on: tuple[type[BaseException], ...] = ()
    """Exceptions of these types are never retried (checked before ``retry_on``)."""

    def retries(self, exc: BaseException) -> bool:
        """Whether a step that raised ``exc`` may be retried under this policy.

        >>> Retry(max_attempts=3, no_retry_on=(KeyError,)).retries(KeyError("x"))
        False
        >>> Retry(max_attempts=3, retry_on=(TimeoutError,)).retries(ValueError())
        False
        """
        if isinstance(exc, self.no_retry_on):
            return False
        return not self.retry_on or isinstance(exc, self.retry_on)


class GiveUpReason(StrEnum):
    """Why no further attempt is made."""

    EXHAUSTED = "exhausted"
    NOT_RETRYABLE = "not_retryable"


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryAt:
    """Retry: attempt number ``attempt`` is due at ``at``."""

    attempt: int
    delay: timedelta
    at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class GiveUp:
    """Do not retry."""

    reason: GiveUpReason
    attempts: int


RetryDecision: TypeAlias = RetryAt | GiveUp


def clamp_delay(delay: timedelta) -> timedelta:
    """``delay`` within ``[0, MAX_DELAY]``: the bounds of every delay SquidMesh schedules.

    >>> clamp_delay(timedelta(seconds=-5))
    datetime.timedelta(0)
    >>> clamp_delay(timedelta(days=1000)) == MAX_DELAY
    True
    >>> clamp_delay(timedelta(seconds=30))
    datetime.timedelta(seconds=30)
    """
    return min(max(delay, ZERO), MAX_DELAY)


def jitter_fraction(run_id: str, step: str, attempt: int) -> float:
    """A number in [0, 1) derived from a stable hash of the attempt's identity.

    >>> jitter_fraction("r", "s", 1) == jitter_fraction("r", "s", 1)
    True
    """
    digest = hashlib.sha256(f"{run_id}\x1f{step}\x1f{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def base_delay(backoff: Backoff | None, failed_attempt: int) -> timedelta:
    """The un-jittered delay after ``failed_attempt`` (1-based).

    >>> base_delay(Exponential(min=timedelta(seconds=1), max=timedelta(seconds=5)), 3)
    datetime.timedelta(seconds=4)
    """
    n = max(failed_attempt, 1) - 1
    match backoff:
        case None:
            return ZERO
        case Fixed(delay=delay):
            return delay
        case Linear(min=low, step=step, max=high):
            return min(low + step * n, high)
        case Exponential(min=low, max=high, factor=factor):
            # Compare logarithms first so huge attempt numbers cannot overflow.
            if low >= high or n * math.log(factor) >= math.log(high / low):
                return high
            return min(low * factor**n, high)


def backoff_delay(
    backoff: Backoff | None, *, run_id: str, step: str, failed_attempt: int
) -> timedelta:
    """The delay after ``failed_attempt``, with deterministic jitter applied."""
    delay = base_delay(backoff, failed_attempt)
    jitter = 0.0 if backoff is None else backoff.jitter
    if jitter <= 0 or delay <= ZERO:
        return delay
    cut = jitter * jitter_fraction(run_id, step, failed_attempt)
    return delay * (1.0 - cut)


def decide_retry(
    policy: Retry | None,
    *,
    failed_attempt: int,
    retryable: bool,
    retry_after: timedelta | None,
    run_id: str,
    step: str,
    now: datetime,
) -> RetryDecision:
    """Decide whether attempt ``failed_attempt`` is followed by another, and when.

    Returns:
        ``RetryAt`` with the next attempt number and due time, or ``GiveUp``
        saying why not.

    >>> from datetime import datetime, UTC
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> decide_retry(Retry(max_attempts=2), failed_attempt=1, retryable=True,
    ...              retry_after=None, run_id="r", step="s", now=t).attempt
    2
    """
    if not retryable:
        return GiveUp(reason=GiveUpReason.NOT_RETRYABLE, attempts=failed_attempt)
    max_attempts = 1 if policy is None else policy.max_attempts
    if failed_attempt >= max_attempts:
        return GiveUp(reason=GiveUpReason.EXHAUSTED, attempts=failed_attempt)
    if retry_after is not None:
        delay = clamp_delay(retry_after)
    else:
        backoff = None if policy is None else policy.backoff
        delay = backoff_delay(backoff, run_id=run_id, step=step, failed_attempt=failed_attempt)
    return RetryAt(attempt=failed_attempt + 1, delay=delay, at=now + delay)
