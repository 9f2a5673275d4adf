"""The job body every system runs: note the start time first, do the work, append one line.

The line is `SEQ START END PID`, written with one O_APPEND write() to the run's record file, which
the harness reads after (and, only to count, during) the run. Every system pays the same open/write.
"""

from __future__ import annotations

import os
import time

SLEEP_SECONDS = 0.01


def record(seq: int, path: str, start: float) -> None:
    end = time.time()
    line = f"{seq} {start:.6f} {end:.6f} {os.getpid()}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def noop(seq: int, path: str) -> None:
    start = time.time()
    record(seq, path, start)


def sleep(seq: int, path: str) -> None:
    start = time.time()
    time.sleep(SLEEP_SECONDS)
    record(seq, path, start)


BODIES = {"noop": noop, "sleep": sleep}
