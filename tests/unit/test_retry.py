from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from squidmesh_core import Exponential, Fixed, Linear, Retry
from squidmesh_core.protocol import GiveUp, RetryAt, decide_retry
from squidmesh_core.retry import (
    MAX_DELAY,
    GiveUpReason,
    backoff_delay,
    base_delay,
    clamp_delay,
    jitter_fraction,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
S = timedelta(seconds=1)


def retry(policy: Retry | None, attempt: int, **kw: object) -> object:
    options: dict[str, object] = {"retryable": True, "retry_after": None} | kw
    return decide_retry(
        policy,
        failed_attempt=attempt,
        run_id="run",
        step="step",
        now=NOW,
        **options,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("backoff", "expected"),
    [
        (Exponential(min=S, max=5 * S), [1, 2, 4, 5, 5]),
        (Exponential(min=S, max=100 * S, factor=3), [1, 3, 9, 27, 81]),
        (Linear(min=S, step=2 * S, max=6 * S), [1, 3, 5, 6, 6]),
        (Fixed(delay=7 * S), [7, 7, 7, 7, 7]),
        (None, [0, 0, 0, 0, 0]),
    ],
)
def test_base_delays(backoff: object, expected: list[int]) -> None:
    assert [base_delay(backoff, n).total_seconds() for n in range(1, 6)] == expected  # type: ignore[arg-type]


def test_exponential_does_not_overflow_for_huge_attempts() -> None:
    assert base_delay(Exponential(min=S, max=S * 60), 10_000) == S * 60


def test_max_attempts_counts_the_first_attempt() -> None:
    policy = Retry(max_attempts=3)
    assert retry(policy, 1) == RetryAt(attempt=2, delay=timedelta(0), at=NOW)
    assert retry(policy, 2) == RetryAt(attempt=3, delay=timedelta(0), at=NOW)
    assert retry(policy, 3) == GiveUp(reason=GiveUpReason.EXHAUSTED, attempts=3)


def test_no_policy_means_one_attempt() -> None:
    assert retry(None, 1) == GiveUp(reason=GiveUpReason.EXHAUSTED, attempts=1)


def test_non_retryable_failure_never_retries() -> None:
    assert retry(Retry(max_attempts=5), 1, retryable=False) == GiveUp(
        reason=GiveUpReason.NOT_RETRYABLE, attempts=1
    )


def test_retry_after_wins_over_backoff() -> None:
    policy = Retry(max_attempts=3, backoff=Fixed(delay=S * 100))
    assert retry(policy, 1, retry_after=S * 2) == RetryAt(attempt=2, delay=S * 2, at=NOW + S * 2)


def test_retry_after_does_not_win_over_max_attempts() -> None:
    assert isinstance(retry(Retry(max_attempts=1), 1, retry_after=S), GiveUp)


def test_negative_retry_after_means_now() -> None:
    assert retry(Retry(max_attempts=2), 1, retry_after=-S) == RetryAt(
        attempt=2, delay=timedelta(0), at=NOW
    )


def test_jitter_shortens_deterministically_within_bounds() -> None:
    backoff = Fixed(delay=S * 10, jitter=0.5)
    first = backoff_delay(backoff, run_id="r", step="s", failed_attempt=1)
    assert first == backoff_delay(backoff, run_id="r", step="s", failed_attempt=1)
    assert S * 5 <= first <= S * 10
    others = {backoff_delay(backoff, run_id=f"r{i}", step="s", failed_attempt=1) for i in range(20)}
    assert len(others) > 1


def test_jitter_fraction_is_in_unit_interval() -> None:
    assert all(0 <= jitter_fraction("r", "s", n) < 1 for n in range(50))


@pytest.mark.parametrize(
    ("delay", "expected"),
    [
        (-S, timedelta(0)),
        (timedelta(0), timedelta(0)),
        (30 * S, 30 * S),
        (MAX_DELAY, MAX_DELAY),
        (MAX_DELAY + S, MAX_DELAY),
        (timedelta.max, MAX_DELAY),
        (timedelta.min, timedelta(0)),
    ],
)
def test_clamp_delay_keeps_delays_within_zero_and_max_delay(
    delay: timedelta, expected: timedelta
) -> None:
    assert clamp_delay(delay) == expected


def test_retry_after_is_clamped_like_every_delay() -> None:
    outcome = retry(Retry(max_attempts=2), 1, retry_after=MAX_DELAY * 2)
    assert isinstance(outcome, RetryAt)
    assert outcome.delay == clamp_delay(MAX_DELAY * 2) == MAX_DELAY
