"""Laws of the retry decision, over every backoff shape."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from squidmesh_core import Exponential, Fixed, Linear, Retry
from squidmesh_core.protocol import GiveUp, RetryAt, decide_retry
from squidmesh_core.retry import (
    MAX_DELAY,
    Backoff,
    GiveUpReason,
    backoff_delay,
    base_delay,
    clamp_delay,
)
from squidmesh_core.testing.strategies import BASE_TIME, backoffs, retries

attempts = st.integers(min_value=1, max_value=40)
names = st.text(min_size=1, max_size=10)


def cap(backoff: Backoff) -> timedelta:
    match backoff:
        case Fixed(delay=delay):
            return delay
        case Linear(max=high) | Exponential(max=high):
            return high


@given(backoffs(jitter=False), attempts)
def test_delay_never_shrinks_until_the_cap(backoff: Backoff, n: int) -> None:
    assert base_delay(backoff, n) <= base_delay(backoff, n + 1)


@given(backoffs(), attempts, names, names)
def test_delay_never_exceeds_the_cap(backoff: Backoff, n: int, run_id: str, step: str) -> None:
    delay = backoff_delay(backoff, run_id=run_id, step=step, failed_attempt=n)
    assert timedelta(0) <= delay <= cap(backoff)


@given(backoffs(), attempts, names, names)
def test_jitter_only_shortens_by_its_fraction(
    backoff: Backoff, n: int, run_id: str, step: str
) -> None:
    delay = backoff_delay(backoff, run_id=run_id, step=step, failed_attempt=n)
    base = base_delay(backoff, n)
    assert base * (1 - backoff.jitter) - timedelta(microseconds=1) <= delay <= base


@given(retries(), attempts, st.booleans(), names, names)
def test_same_inputs_same_decision(
    policy: Retry | None, n: int, retryable: bool, run_id: str, step: str
) -> None:
    def once() -> object:
        return decide_retry(
            policy,
            failed_attempt=n,
            retryable=retryable,
            retry_after=None,
            run_id=run_id,
            step=step,
            now=BASE_TIME,
        )

    assert once() == once()


@given(st.integers(min_value=1, max_value=20), backoffs() | st.none())
def test_gives_up_exactly_after_max_attempts(max_attempts: int, backoff: Backoff | None) -> None:
    policy = Retry(max_attempts=max_attempts, backoff=backoff)
    outcomes = [
        decide_retry(
            policy,
            failed_attempt=n,
            retryable=True,
            retry_after=None,
            run_id="r",
            step="s",
            now=BASE_TIME,
        )
        for n in range(1, max_attempts + 1)
    ]
    assert all(isinstance(o, RetryAt) for o in outcomes[:-1])
    assert [o.attempt for o in outcomes[:-1]] == list(range(2, max_attempts + 1))  # type: ignore[union-attr]
    assert outcomes[-1] == GiveUp(reason=GiveUpReason.EXHAUSTED, attempts=max_attempts)


@given(retries(), attempts, st.integers(0, 10**6).map(lambda ms: timedelta(milliseconds=ms)))
def test_retry_after_wins(policy: Retry | None, n: int, after: timedelta) -> None:
    outcome = decide_retry(
        policy,
        failed_attempt=n,
        retryable=True,
        retry_after=after,
        run_id="r",
        step="s",
        now=BASE_TIME,
    )
    max_attempts = 1 if policy is None else policy.max_attempts
    if n < max_attempts:
        assert outcome == RetryAt(attempt=n + 1, delay=after, at=BASE_TIME + after)
    else:
        assert isinstance(outcome, GiveUp)


@given(retries(), attempts)
def test_non_retryable_never_retries(policy: Retry | None, n: int) -> None:
    outcome = decide_retry(
        policy,
        failed_attempt=n,
        retryable=False,
        retry_after=timedelta(seconds=1),
        run_id="r",
        step="s",
        now=BASE_TIME,
    )
    assert outcome == GiveUp(reason=GiveUpReason.NOT_RETRYABLE, attempts=n)


delays = st.timedeltas(min_value=-2 * MAX_DELAY, max_value=2 * MAX_DELAY)


@given(delays)
def test_clamped_delays_lie_within_zero_and_max_delay(delay: timedelta) -> None:
    clamped = clamp_delay(delay)
    assert timedelta(0) <= clamped <= MAX_DELAY
    assert clamp_delay(clamped) == clamped
    if timedelta(0) <= delay <= MAX_DELAY:
        assert clamped == delay


@given(delays, delays)
def test_clamping_keeps_the_order_of_delays(a: timedelta, b: timedelta) -> None:
    if a <= b:
        assert clamp_delay(a) <= clamp_delay(b)


@given(retries(), attempts, delays)
def test_retry_after_is_clamped(policy: Retry | None, n: int, after: timedelta) -> None:
    outcome = decide_retry(
        policy,
        failed_attempt=n,
        retryable=True,
        retry_after=after,
        run_id="r",
        step="s",
        now=BASE_TIME,
    )
    if isinstance(outcome, RetryAt):
        assert outcome.delay == clamp_delay(after)
