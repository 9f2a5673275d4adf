"""What happens after a failed run: retry (now or later) or fail for good. Pure: no I/O, no clock."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from spoold.config import Backoff, Config, RetryRule

MAX_RETRY_DELAY_SECONDS = 3600.0
# A class or method missing from the namespace will not appear by retrying (unless a rule says so).
NEVER_RETRIED = frozenset({"JobNotFound"})
JITTER = 0.25


@dataclass(frozen=True)
class Retry:
    delay_seconds: float


@dataclass(frozen=True)
class Fail:
    reason: str


def find_rule(config: Config, error_mro: Sequence[str]) -> RetryRule | None:
    """The first [retry_on] entry along the exception's MRO (ConnectionRefusedError finds ConnectionError)."""
    for name in error_mro:
        rule = config.retry_on.get(name)
        if rule is not None:
            return rule
    return None


def retry_delay(base: float, backoff: Backoff, failed_runs: int, rng: random.Random | None = None) -> float:
    """fixed: base. exponential: min(base * 2**(n-1), 3600) scaled by a random factor in [0.75, 1.25]."""
    if backoff == "fixed" or base <= 0:
        return base
    raw = min(base * 2 ** (failed_runs - 1), MAX_RETRY_DELAY_SECONDS)
    return float(raw * (1 + (rng or random).uniform(-JITTER, JITTER)))


def next_step(config: Config, error_mro: Sequence[str], *, failed_runs: int, job_retry_attempts: int | None,
              rng: random.Random | None = None) -> Retry | Fail:
    """`failed_runs` counts the failures in the current retry budget, this one included.

    A matching [retry_on] rule wins over the job's own `retry_attempts`, which wins over the global setting.
    """
    rule = find_rule(config, error_mro)
    if rule is None and NEVER_RETRIED.intersection(error_mro):
        return Fail(f"{error_mro[0]} is never retried")
    attempts = config.retry_attempts if job_retry_attempts is None else job_retry_attempts
    if rule is not None and rule.retry_attempts is not None:
        attempts = rule.retry_attempts
    if failed_runs > attempts:
        return Fail(f"{failed_runs} failed run(s), {attempts} retr{'y' if attempts == 1 else 'ies'} allowed")
    base = rule.retry_delay_seconds if rule and rule.retry_delay_seconds is not None else config.retry_delay_seconds
    backoff = rule.retry_backoff if rule and rule.retry_backoff is not None else config.retry_backoff
    return Retry(retry_delay(base, backoff, failed_runs, rng))
