"""The retry decision is pure, so it is tested with an injected random source, no clock."""

from __future__ import annotations

import random
from pathlib import Path

from spoold.config import parse_config
from spoold.retry import Fail, Retry, next_step, retry_delay

CONFIG = parse_config(Path("/app/bgjobs.toml"), {
    "retry_attempts": 2, "retry_delay_seconds": 5,
    "retry_on": {"ConnectionError": {"retry_attempts": 5, "retry_delay_seconds": 1, "retry_backoff": "exponential"},
                 "ValueError": {"retry_attempts": 0}, "Timeout": {"retry_attempts": 1}},
})


def test_the_global_budget_allows_retry_attempts_retries_then_fails() -> None:
    mro = ("RuntimeError", "Exception", "BaseException", "object")
    assert next_step(CONFIG, mro, failed_runs=1, job_retry_attempts=None) == Retry(5.0)
    assert next_step(CONFIG, mro, failed_runs=2, job_retry_attempts=None) == Retry(5.0)
    assert isinstance(next_step(CONFIG, mro, failed_runs=3, job_retry_attempts=None), Fail)


def test_a_retry_on_rule_is_found_along_the_mro() -> None:
    mro = ("ConnectionRefusedError", "ConnectionError", "OSError", "Exception", "BaseException", "object")
    step = next_step(CONFIG, mro, failed_runs=5, job_retry_attempts=None, rng=random.Random(1))
    assert isinstance(step, Retry)
    assert isinstance(next_step(CONFIG, mro, failed_runs=6, job_retry_attempts=None), Fail)


def test_a_rule_with_zero_retries_wins_over_the_jobs_own_retry_attempts() -> None:
    mro = ("ValueError", "Exception", "BaseException", "object")
    assert isinstance(next_step(CONFIG, mro, failed_runs=1, job_retry_attempts=9), Fail)


def test_the_jobs_retry_attempts_override_the_global_setting() -> None:
    mro = ("RuntimeError", "Exception")
    assert isinstance(next_step(CONFIG, mro, failed_runs=3, job_retry_attempts=5), Retry)
    assert isinstance(next_step(CONFIG, mro, failed_runs=1, job_retry_attempts=0), Fail)


def test_timeout_can_be_named_in_retry_on() -> None:
    assert isinstance(next_step(CONFIG, ("Timeout",), failed_runs=1, job_retry_attempts=None), Retry)
    assert isinstance(next_step(CONFIG, ("Timeout",), failed_runs=2, job_retry_attempts=None), Fail)


def test_exponential_delays_double_within_the_jitter_and_are_capped() -> None:
    rng = random.Random(7)
    for n in range(1, 8):
        delay = retry_delay(1.0, "exponential", n, rng)
        assert 0.75 * 2 ** (n - 1) <= delay <= 1.25 * 2 ** (n - 1)
    assert retry_delay(10.0, "exponential", 30, rng) <= 3600 * 1.25
    assert retry_delay(5.0, "fixed", 4) == 5.0
