"""RetryPolicy.delay_s: exponential backoff with a cap."""

from __future__ import annotations

from pipeline.db.jobs import RetryPolicy


def test_delay_doubles_with_each_attempt_starting_at_base() -> None:
    policy = RetryPolicy(base_s=5.0, max_s=10_000.0)

    assert [policy.delay_s(a) for a in range(1, 7)] == [5.0, 10.0, 20.0, 40.0, 80.0, 160.0]


def test_delay_is_capped_at_max() -> None:
    policy = RetryPolicy(base_s=5.0, max_s=600.0)

    assert policy.delay_s(7) == 320.0
    assert policy.delay_s(8) == 600.0
    assert policy.delay_s(9) == 600.0
    assert policy.delay_s(50) == 600.0


def test_delay_never_decreases_as_attempts_grow() -> None:
    policy = RetryPolicy(base_s=0.1, max_s=30.0)
    delays = [policy.delay_s(a) for a in range(1, 40)]

    assert delays == sorted(delays)
    assert max(delays) == 30.0


def test_attempt_zero_or_below_gets_the_base_delay() -> None:
    policy = RetryPolicy(base_s=2.0, max_s=60.0)

    assert policy.delay_s(0) == 2.0
    assert policy.delay_s(-3) == 2.0


def test_delay_is_a_float() -> None:
    assert isinstance(RetryPolicy(base_s=1, max_s=8).delay_s(2), float)


def test_zero_base_means_retry_immediately() -> None:
    assert RetryPolicy(base_s=0.0, max_s=600.0).delay_s(5) == 0.0


def test_delay_stays_capped_for_very_large_attempt_numbers() -> None:
    assert RetryPolicy(base_s=5.0, max_s=600.0).delay_s(2000) == 600.0
