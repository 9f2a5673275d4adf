"""Loaded (through PYTHONPATH) only by processes a test runs under libfaketime with a shifted wall clock.

Python's time.sleep calls clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME), which libfaketime's wrapper
refuses with EINVAL when the monotonic clock is left real (FAKETIME_DONT_FAKE_MONOTONIC=1), and
subprocess's waits sleep through it. select() is left alone by libfaketime, so time.sleep goes through
it here. The wall clock stays shifted: that is what the test is about.
"""

import select
import time
from typing import SupportsIndex


def _sleep(seconds: float | SupportsIndex) -> None:
    deadline = time.monotonic() + float(seconds)
    while (left := deadline - time.monotonic()) > 0:
        select.select([], [], [], left)


time.sleep = _sleep
